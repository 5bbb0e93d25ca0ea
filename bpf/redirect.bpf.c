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
 * nm_connect6, nm_getpeername6: the same for an IPv6 socket connecting to an IPv4-mapped address
 *   (::ffff:a.b.c.d; e.g. Java's dual-stack sockets), which iptables catches as IPv4 too. Other
 *   IPv6 destinations pass: the pods are IPv4-only, as the iptables rules are.
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

/*
 * Decides for a TCP connect() of the pod to ip:port (network order) and, when it is to be
 * redirected, records the destination under the socket's cookie. 1: redirect; 0: leave it;
 * -1: refuse it (the destination could not be recorded: never bypass the mesh silently).
 */
static __always_inline int intercept(struct bpf_sock_addr *ctx, const struct nm_pod_config *cfg, __u32 ip,
				     __u16 port_be)
{
	struct nm_orig_dst dst = {};
	struct bpf_sock *sk;
	__u64 cookie;

	/* Loopback (127.0.0.0/8) and 0.0.0.0: the pod talking to itself. */
	if ((bpf_ntohl(ip) >> 24) == 127 || ip == 0)
		return 0;
	sk = ctx->sk;
	if (sk && (sk->mark & cfg->agent_mark_mask) == cfg->agent_mark)
		return 0;
	if (excluded(cfg, ip, bpf_ntohs(port_be)))
		return 0;
	cookie = bpf_get_socket_cookie(ctx);
	dst.ip = ip;
	dst.port = port_be;
	if (bpf_map_update_elem(&nm_cookie_dst, &cookie, &dst, BPF_ANY))
		return -1;
	return 1;
}

static __always_inline struct nm_pod_config *tcp_config(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct nm_pod_config *cfg;

	if (ctx->type != NM_SOCK_STREAM || ctx->protocol != NM_IPPROTO_TCP)
		return 0;
	cfg = bpf_map_lookup_elem(&nm_pod_config, &zero);
	if (!cfg || !cfg->enabled)
		return 0;
	return cfg;
}

SEC("cgroup/connect4")
int nm_connect4(struct bpf_sock_addr *ctx)
{
	struct nm_pod_config *cfg = tcp_config(ctx);
	int verdict;

	if (!cfg)
		return 1;
	verdict = intercept(ctx, cfg, ctx->user_ip4, (__u16)ctx->user_port);
	if (verdict < 0)
		return 0; /* EPERM */
	if (verdict > 0) {
		ctx->user_ip4 = cfg->redirect_ip;
		ctx->user_port = bpf_htons(cfg->redirect_port);
	}
	return 1;
}

/* ::ffff:0:0/96, the IPv4-mapped IPv6 addresses. */
static __always_inline int v4_mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
}

SEC("cgroup/connect6")
int nm_connect6(struct bpf_sock_addr *ctx)
{
	struct nm_pod_config *cfg = tcp_config(ctx);
	int verdict;

	if (!cfg || !v4_mapped(ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2]))
		return 1;
	verdict = intercept(ctx, cfg, ctx->user_ip6[3], (__u16)ctx->user_port);
	if (verdict < 0)
		return 0;
	if (verdict > 0) {
		ctx->user_ip6[3] = cfg->redirect_ip;
		ctx->user_port = bpf_htons(cfg->redirect_port);
	}
	return 1;
}

SEC("sockops")
int nm_sockops(struct bpf_sock_ops *skops)
{
	struct nm_orig_dst *dst;
	struct nm_tuple key = {};
	__u64 cookie;

	__u32 family, ip4, ip6_0, ip6_1, ip6_2, ip6_3;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	/* Every field read once, at its constant offset: the verifier refuses a computed ctx pointer. */
	family = skops->family;
	ip4 = skops->local_ip4;
	ip6_0 = skops->local_ip6[0];
	ip6_1 = skops->local_ip6[1];
	ip6_2 = skops->local_ip6[2];
	ip6_3 = skops->local_ip6[3];
	asm volatile("" : "+r"(ip4), "+r"(ip6_0), "+r"(ip6_1), "+r"(ip6_2), "+r"(ip6_3));
	if (family == NM_AF_INET)
		key.ip = ip4;
	else if (family == NM_AF_INET6 && v4_mapped(ip6_0, ip6_1, ip6_2))
		key.ip = ip6_3;
	else
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	dst = bpf_map_lookup_elem(&nm_cookie_dst, &cookie);
	if (!dst)
		return 1;
	key.netns = bpf_get_netns_cookie(skops);
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

SEC("cgroup/getpeername6")
int nm_getpeername6(struct bpf_sock_addr *ctx)
{
	struct nm_orig_dst *dst;
	__u64 cookie = bpf_get_socket_cookie(ctx);

	dst = bpf_map_lookup_elem(&nm_cookie_dst, &cookie);
	if (!dst)
		return 1;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
	ctx->user_ip6[3] = dst->ip;
	ctx->user_port = dst->port;
	return 1;
}
