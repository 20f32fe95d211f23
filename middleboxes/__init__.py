"""Inline packet processors that imitate real middleboxes (see middleboxes/contract.py).

Modules, one concern each:
    contract      the contract: Direction, MiddleboxCounters, the Middlebox protocol
    chain         MiddleboxChain: boxes in path order (the inline pipeline and testbed.sim)
    registry      the catalogue table, build_middlebox(), describe_middleboxes()
    spec          typed frozen parameter dataclasses, strict parsing, MiddleboxSpecError
    triggers      after_bytes / after_s / until_s / flows / active for every box (one gate)
    catalogue_base  MiddleboxBase, the catalogue's base class (params, rng, counters, change log)
    flows         flow keys normalized by direction, 32-bit sequence arithmetic
    classify      spec names of options (mp_join, dss, ...) and packet classes (syn, data, ...)
    predicates    packet predicates and the matcher shared by drop and delay
    nat, strip_options, rewrite_seq, coalesce, split, rewrite_payload, syn_firewall,
    impairments (drop, delay)   the catalogue, each module naming the device it imitates
"""
