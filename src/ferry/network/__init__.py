"""Networks: bridges, IPAM, network namespaces, veth pairs, published ports and
the network lock, through netlink and nftables.

It never touches a container's processes or files.
"""
