"""Deterministic generators for the fednode seed datasets.

Every table is a pure function of ``(seed, rows)``: the same arguments give the
same rows on every machine. Tables are produced in fixed-size batches, each
drawn from its own random stream, so memory stays bounded by one batch no
matter how many rows are asked for.
"""
