"""Object storage (S3 and S3-compatible stores, Google Cloud Storage, Azure Blob, HTTPS) for ``--images URL``.

One job per module: ``urls`` parses an object URL, ``stores`` makes the store that serves it (the optional
``storage`` extra's obstore, imported only when a URL is used, with each cloud's own credential chain),
``reads`` lists, reads and streams objects, ``writes`` writes them, ``retries`` tries a request again after a
transient failure and counts it (``retries.counts()``), ``errors`` turns the library's exceptions into one-line
errors that name the bucket or object and what to check, and never carry a secret. Nothing here signs a request
or speaks HTTP itself: obstore (Rust's ``object_store``) does.
"""
