/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared between the programs and the loader (init-container/ebpf-maps.ts encodes these structs
 * byte for byte: keep both in step). Multi-byte fields marked "net" are in network byte order,
 * the rest in host byte order.
 */
#ifndef NODEMESH_BPF_H
#define NODEMESH_BPF_H

#define NM_MAX_PORT_RANGES 32
#define NM_MAX_CIDRS 32

#define NM_AF_INET 2
#define NM_AF_INET6 10
#define NM_SOCK_STREAM 1
#define NM_IPPROTO_TCP 6
#define NM_SOL_IP 0
#define NM_SO_ORIGINAL_DST 80

struct nm_port_range {
	__u16 first;
	__u16 last;
};

struct nm_cidr {
	__u32 addr; /* net, host bits cleared */
	__u32 mask; /* net */
};

/* nm_pod_config[0]: one per pod (its own copy of redirect.bpf.o). 408 bytes. */
struct nm_pod_config {
	__u32 enabled;         /* 0 until the loader has filled the map: pass everything */
	__u32 agent_mark;      /* sockets with (mark & agent_mark_mask) == agent_mark are never redirected */
	__u32 agent_mark_mask;
	__u32 redirect_ip;     /* net: where the agent's outbound listener is reached (127.0.0.1) */
	__u16 redirect_port;   /* the agent's outbound listener (15001) */
	__u16 n_ports;         /* excluded destination port ranges in ports[] */
	__u16 n_cidrs;         /* excluded destinations in cidrs[] (with the pod's own addresses) */
	__u16 pad;
	struct nm_port_range ports[NM_MAX_PORT_RANGES];
	struct nm_cidr cidrs[NM_MAX_CIDRS];
};

/* nm_node_config[0]: one per node (origdst.bpf.o). */
struct nm_node_config {
	__u32 enabled;
	__u16 outbound_port; /* only accepted sockets on this local port are answered (15001) */
	__u16 pad;
};

/* An original destination, as struct sockaddr_in holds it. */
struct nm_orig_dst {
	__u32 ip;   /* net */
	__u16 port; /* net */
	__u16 pad;
};

/*
 * The redirected connection, seen from the app's side: its network namespace and its local
 * address, which is the remote address of the socket the agent accepted.
 */
struct nm_tuple {
	__u64 netns;  /* bpf_get_netns_cookie */
	__u32 ip;     /* net */
	__u16 port;   /* net */
	__u16 pad;
};

/* Written by the pods' sockops program, read by the node's getsockopt program: pinned per node. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct nm_tuple);
	__type(value, struct nm_orig_dst);
} nm_tuple_dst SEC(".maps");

#endif
