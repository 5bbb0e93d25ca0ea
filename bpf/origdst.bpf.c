// SPDX-License-Identifier: Apache-2.0
/*
 * Per node: attached where the agent's getsockopt() calls run (the root of the cgroup v2
 * hierarchy by default) by the first `nodemesh init --mode ebpf` on the node.
 *
 * nm_getsockopt (cgroup/getsockopt): getsockopt(SOL_IP, SO_ORIGINAL_DST) on a socket accepted on
 *   the agent's outbound port is answered from nm_tuple_dst, keyed by the socket's network
 *   namespace and peer address (the app's end of the connection nm_connect4 redirected). Every
 *   other call, and a socket without an entry, keeps the kernel's own answer (iptables' conntrack).
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
	__type(value, struct nm_node_config);
} nm_node_config SEC(".maps");

SEC("cgroup/getsockopt")
int nm_getsockopt(struct bpf_sockopt *ctx)
{
	__u32 zero = 0;
	struct nm_node_config *cfg;
	struct nm_orig_dst *dst;
	struct nm_tuple key = {};
	struct bpf_sock *sk;
	struct sockaddr_in *sa;

	if (ctx->level != NM_SOL_IP || ctx->optname != NM_SO_ORIGINAL_DST)
		return 1;
	sk = ctx->sk;
	if (!sk || sk->family != NM_AF_INET)
		return 1;
	cfg = bpf_map_lookup_elem(&nm_node_config, &zero);
	if (!cfg || !cfg->enabled || sk->src_port != cfg->outbound_port)
		return 1;
	key.netns = bpf_get_netns_cookie(ctx);
	key.ip = sk->dst_ip4;
	key.port = sk->dst_port;
	dst = bpf_map_lookup_elem(&nm_tuple_dst, &key);
	if (!dst)
		return 1;
	sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return 1;
	sa->sin_family = NM_AF_INET;
	sa->sin_port = dst->port;
	sa->sin_addr.s_addr = dst->ip;
	__builtin_memset(sa->__pad, 0, sizeof(sa->__pad));
	ctx->optlen = sizeof(*sa);
	ctx->retval = 0;
	return 1;
}
