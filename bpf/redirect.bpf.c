// SPDX-License-Identifier: Apache-2.0
/*
 * Per pod: attached to the pod's cgroup (v2) by `nodemesh init --mode ebpf`.
 *
 * nm_connect4 (cgroup/connect4): a TCP connect() of the pod to anything but loopback, the pod's
 *   own addresses and the exclusions is sent to the agent's outbound listener (127.0.0.1:15001 in
 *   the pod's network namespace); the destination asked for is kept in nm_cookie_dst under the
 *   socket's cookie. The agent's own sockets (SO_MARK) pass untouched.
 * nm_sockops (sockops): when such a socket sends its SYN (TCP_CONNECT_CB, its local port is known
 *   by then), the destination is copied to the node-wide nm_tuple_dst under (netns, local ip,
 *   local port): the key the agent's accepted socket finds as its peer address (origdst.bpf.c).
 * nm_getpeername4 (cgroup/getpeername4): the app asking its socket's peer gets the destination it
 *   connected to, not the agent's listener, as with iptables REDIRECT (nm_cookie_dst keeps it).
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "nodemesh.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nm_pod_config);
} nm_pod_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct nm_orig_dst);
} nm_cookie_dst SEC(".maps");

static __always_inline int excluded(const struct nm_pod_config *cfg, __u32 ip, __u16 port)
{
	__u32 i;

	for (i = 0; i < NM_MAX_PORT_RANGES; i++) {
		if (i >= cfg->n_ports)
			break;
		if (port >= cfg->ports[i].first && port <= cfg->ports[i].last)
			return 1;
	}
	for (i = 0; i < NM_MAX_CIDRS; i++) {
		if (i >= cfg->n_cidrs)
			break;
		if ((ip & cfg->cidrs[i].mask) == cfg->cidrs[i].addr)
			return 1;
	}
	return 0;
}

SEC("cgroup/connect4")
int nm_connect4(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct nm_pod_config *cfg;
	struct bpf_sock *sk;
	struct nm_orig_dst dst = {};
	__u64 cookie;
	__u32 ip = ctx->user_ip4;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);

	if (ctx->type != NM_SOCK_STREAM || ctx->protocol != NM_IPPROTO_TCP)
		return 1;
	cfg = bpf_map_lookup_elem(&nm_pod_config, &zero);
	if (!cfg || !cfg->enabled)
		return 1;
	/* Loopback (127.0.0.0/8) and 0.0.0.0: the pod talking to itself. */
	if ((bpf_ntohl(ip) >> 24) == 127 || ip == 0)
		return 1;
	sk = ctx->sk;
	if (sk && (sk->mark & cfg->agent_mark_mask) == cfg->agent_mark)
		return 1;
	if (excluded(cfg, ip, port))
		return 1;

	cookie = bpf_get_socket_cookie(ctx);
	dst.ip = ip;
	dst.port = (__u16)ctx->user_port;
	if (bpf_map_update_elem(&nm_cookie_dst, &cookie, &dst, BPF_ANY))
		return 0; /* cannot remember where it was going: refuse (EPERM) rather than bypass */
	ctx->user_ip4 = cfg->redirect_ip;
	ctx->user_port = bpf_htons(cfg->redirect_port);
	return 1;
}

SEC("sockops")
int nm_sockops(struct bpf_sock_ops *skops)
{
	struct nm_orig_dst *dst;
	struct nm_tuple key = {};
	__u64 cookie;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB || skops->family != NM_AF_INET)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	dst = bpf_map_lookup_elem(&nm_cookie_dst, &cookie);
	if (!dst)
		return 1;
	key.netns = bpf_get_netns_cookie(skops);
	key.ip = skops->local_ip4;
	key.port = bpf_htons((__u16)skops->local_port);
	bpf_map_update_elem(&nm_tuple_dst, &key, dst, BPF_ANY);
	return 1;
}

SEC("cgroup/getpeername4")
int nm_getpeername4(struct bpf_sock_addr *ctx)
{
	struct nm_orig_dst *dst;
	__u64 cookie = bpf_get_socket_cookie(ctx);

	dst = bpf_map_lookup_elem(&nm_cookie_dst, &cookie);
	if (!dst)
		return 1;
	ctx->user_ip4 = dst->ip;
	ctx->user_port = dst->port;
	return 1;
}
