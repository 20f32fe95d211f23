"""testbed.analyze: MPTCP v1 analysis of any packet capture (`testbed analyze CAPTURE`).

capture.py reads pcap/pcapng and link layers, analyzer.py routes packets to subflows
(subflow.py, the TCP level) and connections (connection.py, datalevel.py), output.py writes
analysis.json and the CSVs, plots.py the PNGs and HTML page, command.py is the CLI, bench.py
measures packets per second on a synthetic capture.
"""
