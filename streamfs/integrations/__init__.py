"""Hosting streamfs pipelines inside other stream processors (each an optional extra).

streamfs.integrations.faust    a Faust (faust-streaming) app runs a pipeline (`streamfs[faust]`)
"""
