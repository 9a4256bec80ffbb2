"""Instruction data generation: symbolic image text -> teacher LLM -> LLaVA instruction data.

Modules:
  prompts    prompt files (generate/prompts/<type>/) -> chat messages
  (the endpoint client and its journal: vinstruct.endpoint)
  batch_api/ the same requests through a Batch API: files, batches, polling, results (resumable)
  parse      teacher text -> question/answer turns
  filters    quality filters with counted reasons
  samples    caption expansion and LLaVA samples
  pipeline   the `vinstruct generate` run (plan, fetch, assemble, write)
  mix        type ratios, merging shards
  answers    reference answers to free questions (for evaluation)
  scripted/  the offline scripted teacher (an OpenAI-compatible server)
  faults     injected latency and faults for testing clients
  server     serve an app on a background thread
"""
