"""The outbound path: policy → sign → encrypt per recipient group, in the crypto workers.

`job.process` is the worker pool's job function ("gateway.outbound.job:process") and
`context.init_worker` its initializer; `readiness.CertificateReadiness` is the front
end's RCPT-time certificate lookup. Wired together by `gateway/run.py` when `[keys]`
and `[lookup]` are configured.
"""
