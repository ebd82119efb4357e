"""DMARC aggregate reports (RFC 9990), built from the store's message records.

The pure parts take values and return values: `aggregate` groups `records.MessageRecord`
into report rows (RFC 9990 §2.1: one row per source IP, identifiers, results and
disposition, with a count) per policy domain and window; `xmlreport` writes the XML
(RFC 9990 Appendix A, or RFC 7489 Appendix C with ``rfc7489 = true``); `mail` names,
compresses and wraps it as the message RFC 9990 §3 describes; `destinations` parses
``rua=`` URIs and verifies external destinations (RFC 9990 §4).

`command` is the one module with effects: ``authmilter reports send|show``, which reads
the store (store/reportdb.py), resolves, signs with our own Signer and mails. Nothing
here imports the milter adapter or runs on the reply path.
"""
