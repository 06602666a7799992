"""fednode's audit ledger: a hash-chained RFC 6962 log with witnessed checkpoints.

Modules (the byte formats are specified in ``ledger/FORMAT.md``):

* ``canonical``  canonical JSON (RFC 8785 subset), the bytes of everything hashed or signed
* ``entry``      entry format v1, salted commitments for sensitive fields
* ``merkle``     RFC 6962/9162 roots, inclusion and consistency proofs
* ``checkpoint`` C2SP signed-note checkpoints and tlog-cosignature/v1 cosignatures
* ``store``      SQLite storage with one writer thread and group commit; fsck
* ``witness``    cosigning peer checkpoints that extend the history already seen
* ``bundle``     writing auditor bundles; ``verify`` checks them offline
* ``shapes``     the verifier's first fast path: entries equal to a shape learned from strict checks
* ``scan``       the verifier's batch fast path for common-shape entries (strict parser otherwise)

The package needs only the standard library and ``cryptography``; it never
imports the node.
"""
