"""SMS escalation through Twilio (issue 11): destinations, bodies, the escalation core, silences, the worker."""
