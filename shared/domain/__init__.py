"""The service's rules: jobs, API keys, quota and rate limits, webhooks, capture sessions, the
capture format and the score's meaning. Each function takes the caller's database session and
never commits: the caller's transaction does."""
