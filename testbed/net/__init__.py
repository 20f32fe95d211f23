"""Network core: topologies as data, built on Mininet nodes, shaped through pyroute2 and nftables."""
