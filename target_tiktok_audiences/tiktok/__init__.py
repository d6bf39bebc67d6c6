"""Everything that speaks TikTok's Business API, and nothing that knows the store or settings.

`codes` names TikTok's answer codes; `http` is the client (session, retries, pacing through
`pacing`, deadlines through `watchdog`); `mapping` is a batch of people and its body;
`audiences` the audience endpoints; `dry_run` the client that writes requests instead.
"""
