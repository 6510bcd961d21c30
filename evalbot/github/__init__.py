"""GitHub side of the poller: a PyGithub client with retries and conditional requests, and the publisher."""
