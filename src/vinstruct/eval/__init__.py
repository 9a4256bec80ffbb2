"""Evaluation: batch prediction, exact QA, POPE, LLaVA-Bench-style judging, ScienceQA.

Modules:
  predict         batched, resumable answers to a question file (official model_vqa formats)
  exact           normalized short-answer matching and accuracy tables
  extract         option letters, yes/no and judge scores read out of free text
  scene           scenes as objects (shape, colour, box) from COCO annotations or symbolic text
  world_qa        exact QA on the world's held-out split (+ image-blind baseline, unseen subset)
  pope            object-existence hallucination (random / popular / adversarial negatives)
  llava_bench     teacher references vs model answers scored by a judge; relative score
  scienceqa       ScienceQA reader, prompts, accuracy breakdowns, the judge ensemble
  sqa_world       ScienceQA-schema problems generated from the world's scenes; the scienceqa suite
  judge           the judge client (openai SDK): concurrency, retries on unreadable replies, journal
  judge_prompts   the judge's prompts, written and read back
  facts           facts an answer states about a scene, checked against it
  scripted_judge  the offline judge: a responder for the scripted OpenAI-compatible server
  endpoints       hosted or scripted judge/teacher endpoints
  suites          the suites by name (SUITES: one entry each), run one or all
  report          results.json / results.md / results.png, and tables across runs
"""
