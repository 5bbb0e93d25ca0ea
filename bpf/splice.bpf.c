// SPDX-License-Identifier: Apache-2.0
/*
 * Per node, optional (`nodemesh init --mode ebpf --splice`): same-namespace TCP connections of the
 * pods that asked for it skip the loopback TCP/IP stack. Loaded by the first such pod, attached
 * where the agent runs (the root of the cgroup v2 hierarchy by default), so it sees both ends: the
 * app's sockets (in the pod's cgroup, a descendant) and the agent's (in the agent's cgroup).
 *
 * The pairs it joins, each with both ends in one pod's network namespace:
 *   app 127.0.0.1:P → agent 127.0.0.1:15001 (the connection nm_connect4 redirected), and
 *   agent <pod ip>:P → app <pod ip>:<port> (the agent delivering an inbound connection);
 * and any other connection of such a pod to its own address or loopback. The agent still reads
 * and writes every byte in user space between its two sockets; what is skipped is the TCP stack
 * of each local leg (segmentation, loopback softirq, ACKs).
 *
 * nm_splice_ops (sockops): when a connection of a listed namespace (nm_splice_netns) is
 *   established, and its local and remote addresses are equal (both ends in this namespace), its
 *   socket goes into nm_splice_socks under (netns, local, remote).
 * nm_splice_msg (sk_msg, on nm_splice_socks): a send on such a socket is put straight into the
 *   receive queue of its peer socket (bpf_msg_redirect_hash, BPF_F_INGRESS) when the peer is in
 *   the map. The choice is made at the socket's first send and kept (nm_splice_mode): a socket
 *   whose first bytes went through TCP, because its peer was not in the map yet, keeps using TCP,
 *   since the receiver reads redirected bytes before those still queued by TCP. FIN and RST still
 *   travel as TCP segments, after the bytes sent before them.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "nodemesh.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Network namespaces (bpf_get_netns_cookie) whose connections are spliced → the pod's cgroup id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} nm_splice_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct nm_sock_key);
	__type(value, __u64);
} nm_splice_socks SEC(".maps");

#define NM_CHOICE_REDIRECT 1
#define NM_CHOICE_TCP 2

/* Per socket, gone with it: how its sends travel, decided at the first. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} nm_splice_mode SEC(".maps");

SEC("sockops")
int nm_splice_ops(struct bpf_sock_ops *skops)
{
	struct nm_sock_key key = {};
	__u32 op = skops->op;
	__u64 netns;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != NM_AF_INET)
		return 1;
	key.local_ip = skops->local_ip4;
	key.remote_ip = skops->remote_ip4;
	/* Equal addresses: both ends are sockets of this namespace (a pod's only non-loopback address). */
	if (key.local_ip != key.remote_ip)
		return 1;
	netns = bpf_get_netns_cookie(skops);
	if (!bpf_map_lookup_elem(&nm_splice_netns, &netns))
		return 1;
	key.netns = netns;
	key.local_port = skops->local_port;
	key.remote_port = bpf_ntohl(skops->remote_port);
	bpf_sock_hash_update(skops, &nm_splice_socks, &key, BPF_ANY);
	return 1;
}

SEC("sk_msg")
int nm_splice_msg(struct sk_msg_md *msg)
{
	struct nm_sock_key peer = {};
	struct bpf_sock *sk = msg->sk;
	__u8 *choice;
	long redirected;

	if (!sk)
		return SK_PASS;
	choice = bpf_sk_storage_get(&nm_splice_mode, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!choice || *choice == NM_CHOICE_TCP)
		return SK_PASS;
	/* The peer's key: this socket's remote end is its local end. */
	peer.netns = bpf_get_netns_cookie(msg);
	peer.local_ip = msg->remote_ip4;
	peer.remote_ip = msg->local_ip4;
	peer.local_port = bpf_ntohl(msg->remote_port);
	peer.remote_port = msg->local_port;
	/* SK_PASS with the redirect set on success; SK_DROP (peer not in the map) leaves the send to TCP. */
	redirected = bpf_msg_redirect_hash(msg, &nm_splice_socks, &peer, BPF_F_INGRESS);
	if (*choice == 0)
		*choice = redirected == SK_PASS ? NM_CHOICE_REDIRECT : NM_CHOICE_TCP;
	/*
	 * A peer gone after the first send (closed: it left the map) gets nothing more either way; TCP
	 * answers the send as it would without splicing (RST, EPIPE).
	 */
	return SK_PASS;
}
