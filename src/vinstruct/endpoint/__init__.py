"""Talking to OpenAI-compatible chat-completions endpoints (the teacher, every judge).

Modules:
  client      EndpointConfig, EndpointClient: concurrency, retries, rate limits, usage; key resolution
  ratelimit   requests/min and tokens/min token buckets
  usage       token estimates, token and cost totals
  journal     the append-only JSONL cache of finished requests (resume without asking twice)
"""
