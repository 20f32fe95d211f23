"""Tables and plots derived from result files alone (DESIGN.md "Results").

summary: the facts a table shows, read out of one result.json; tables: Markdown and HTML
renderings of run summaries and of fallback matrices; html: the page frame and escaping;
plots: a plot specification (plots.json) derived from result files and the PNG rendered from it;
evidence: what crossed the wire, read back from a capture; command: `testbed report DIR`.
"""
