"""The offline scripted teacher: an OpenAI-compatible server built from responders.

    from vinstruct.generate.scripted import create_app, TeacherResponder
    app = create_app()                                  # the scripted teacher alone
    app = create_app([my_judge, TeacherResponder()])    # a judge tried first, then the teacher

See scripted/app.py for the responder protocol.
"""

from vinstruct.generate.scripted.app import DEFAULT_MODEL_NAME, Responder, create_app, default_responders
from vinstruct.generate.scripted.teacher import TeacherResponder, classify_task

__all__ = ["create_app", "default_responders", "Responder", "TeacherResponder", "classify_task", "DEFAULT_MODEL_NAME"]
