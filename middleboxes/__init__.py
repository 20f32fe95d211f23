"""Inline packet processors that imitate real middleboxes (see middleboxes/base.py).

Modules, one concern each:
    base          the contract: Direction, MiddleboxCounters, the Middlebox protocol
    registry      the catalogue table, build_middlebox(), describe_middleboxes()
    spec          typed frozen parameter dataclasses, strict parsing, MiddleboxSpecError
    common        MiddleboxBase (params, rng, counters, bounded change log)
    flows         flow keys normalized by direction, 32-bit sequence arithmetic
    classify      spec names of options (mp_join, dss, ...) and packet classes (syn, data, ...)
    predicates    packet predicates and the matcher shared by drop and delay
    nat, strip_options, rewrite_seq, coalesce, split, rewrite_payload, syn_firewall,
    impairments (drop, delay)   the catalogue, each module naming the device it imitates
"""
