"""Everything that speaks TikTok's Business API, and nothing that knows the store or settings.

`codes` names TikTok's answer codes; `http` is the client (its session and retries, pacing in
`pacing`, deadlines in `watchdog`, answers read by `answers`); `mapping` is a batch of people
and its body; `audiences` the audience endpoints; `dry_run` the client that writes requests.
"""
