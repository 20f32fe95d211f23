"""The I/O driver of the bundled stack: real packets and real time for a sans-IO MptcpHost.

- `packet_io`: AF_PACKET receive (taps every interface before the kernel's IP input) and
  raw IPv4 (IP_HDRINCL) send, one raw socket per local address so policy routing by
  source applies; chosen by measurement (`python -m testbed.mptcp.driver.iobench`).
- `guard`: an nftables table that hides the stack's segments from the host kernel, so the
  kernel never answers them with RSTs; installed by the program, removed on exit.
- `loop`: the event loop (`StackDriver`): batches of received packets, timers, the
  application's reaction, then every packet the host wants to send.
"""
