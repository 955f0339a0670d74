/* counters.h - the C core's counters: names, order, and where they live
 *
 * Each worker and the namespace pump own an array of uint64_t counters in a
 * memfd that the orchestrator creates and maps read-only (numpy views). Only
 * the owning process writes its array, with relaxed atomic adds, so readers
 * never take a lock and see values that are at worst a moment old. The names
 * order and descriptions below are the single source of truth: Python reads
 * them through rn_worker_counter_name() / rn_worker_counter_desc() and
 * rn_pump_counter_name() / rn_pump_counter_desc(), and docs/COUNTERS.md is
 * generated from them (scripts/gen-counters-doc.py).
 *
 * Worker accounting: every frame taken from to_worker adds to frames_in and to
 * exactly one outcome counter: a drop_* reason, a reply (icmp_echo_replies,
 * icmp6_echo_replies), ring_full, a refused new flow (policy_refused,
 * flows_refused_cap, flows_refused_fd, flows_refused_ports, icmp_ping_denied), a protocol's
 * "accepted" counter (tcp_segments_in, udp_in, icmp_echo_fwd, icmp6_echo_fwd),
 * frag_held (a fragment waiting for the rest of its datagram; the fragment
 * that completes one counts the datagram's outcome), fault_drop_in
 * (test-only fault injection), netem_loss_up / netem_full_up (network
 * emulation; a frame it queues is counted when it leaves the queue), or
 * hook_held, hook_absorbed, hook_denied (the on_connect hook, verdict.c; a
 * held frame's replay is not counted again).
 * Everything else here counts events, not frames; counters marked (gauge) go
 * up and down (decremented by adding -1). The marking is read by Python: a
 * gauge's description ends with "(gauge)" (ringnet.stats.gauges()). A worker
 * that replaces a dead one carries on from its counts of every other counter;
 * its gauges are its own state (Network.counters()).
 */
#ifndef RN_COUNTERS_H
#define RN_COUNTERS_H

#include <stdint.h>

/* Worker counters: X(name, description) */
#define RN_WORKER_COUNTERS(X)						\
	X(frames_in,		"frames taken from the namespace ring")	\
	X(bytes_in,		"bytes taken from the namespace ring")	\
	X(frames_out,		"frames put into the namespace ring")	\
	X(bytes_out,		"bytes put into the namespace ring")	\
	X(wakeups,		"times the worker woke from epoll")	\
	X(kicks,		"doorbell writes towards the namespace")\
	X(naps,			"naps instead of sleeps during small-packet streams") \
	X(polls,		"looks again instead of a sleep (busy polling)") \
	X(poll_hits,		"busy polls that ended with work found")	\
	X(ring_full,		"frames for the namespace lost: ring full") \
	X(icmp_echo_replies,	"ICMP echo replies sent")		\
	X(icmp6_echo_replies,	"ICMPv6 echo replies sent")		\
	X(icmp_echo_fwd,	"ICMP echo requests sent through ping sockets") \
	X(icmp6_echo_fwd,	"ICMPv6 echo requests sent through ping sockets") \
	X(icmp_ping_denied,	"echo requests refused: ping sockets not permitted") \
	X(udp_in,		"UDP datagrams (or USO frames) sent to host sockets") \
	X(frag_held,		"IP fragments held until their datagram is complete") \
	X(drop_short,		"frame shorter than its headers")	\
	X(drop_vnet,		"virtio-net header invalid")		\
	X(drop_gso_size,	"USO frame cut into implausibly many segments") \
	X(drop_ip_version,	"IP version neither 4 nor 6")		\
	X(drop_ipv4_header,	"IPv4 header length or total length invalid") \
	X(drop_ipv4_csum,	"IPv4 header checksum wrong")		\
	X(drop_ipv6_header,	"IPv6 payload length invalid")		\
	X(drop_src_addr,	"source address not the namespace's")	\
	X(drop_fragment,	"IP fragments refused (bad length, overlap, ext. header)") \
	X(drop_ext_header,	"IPv6 extension header not handled")	\
	X(drop_multicast,	"multicast or broadcast destination")	\
	X(drop_icmp_header,	"ICMP message too short")		\
	X(drop_icmp_csum,	"ICMP checksum wrong")			\
	X(drop_icmp_type,	"ICMP type not handled")		\
	X(drop_udp_header,	"UDP header truncated or length disagrees with IP") \
	X(drop_udp_port,	"UDP to or from port 0")		\
	X(drop_udp_csum,	"UDP checksum wrong, or partial checksum misplaced") \
	X(drop_unhandled_proto,	"transport protocol not handled yet")	\
	X(drop_wrong_owner,	"frame's flow belongs to another worker") \
	X(policy_refused,	"new flows refused by destination policy") \
	X(flows_refused_cap,	"new flows refused: max_flows reached")	\
	X(flows_refused_fd,	"new flows refused: no host socket (fd limit)") \
	X(flows_refused_ports,	"new UDP flows refused: the host port budget is spent") \
	X(policy_host,		"of policy_refused: an address of the host itself") \
	X(policy_link_local,	"of policy_refused: link-local (169.254.0.0/16, fe80::/10)") \
	X(policy_loopback,	"of policy_refused: host loopback, or the gateway without loopback") \
	X(udp_ports_open,	"host UDP sockets (host ports) held now (gauge)") \
	X(flows_open_tcp,	"TCP flows held now (gauge)")		\
	X(flows_open_udp,	"UDP flows held now (gauge)")		\
	X(flows_open_icmp,	"ICMP flows held now (gauge)")		\
	X(host_events,		"host socket events handled")		\
	X(timer_runs,		"flow timers run")			\
	X(room_waits,		"times a flow waited for room in the namespace ring") \
	X(udp_out,		"UDP datagrams from host sockets to the namespace") \
	X(udp_gso_sends,	"sends carrying several datagrams (UDP_SEGMENT)") \
	X(udp_uso_out,		"USO frames to the namespace (several datagrams each)") \
	X(dns_flows,		"UDP flows opened to the DNS forwarder's upstreams") \
	X(dns_failovers,	"times the current DNS upstream failed and the next took over") \
	X(dns_resends,		"DNS queries (UDP) and connects (TCP) retried on another upstream") \
	X(icmp_echo_in,		"echo replies from ping sockets to the namespace") \
	X(icmp_errors_out,	"ICMP errors sent to the namespace")	\
	X(host_send_errors,	"datagrams the host stack refused to send") \
	X(host_drops,		"datagrams from host sockets dropped (other host, too big)") \
	X(frag_reassembled,	"datagrams reassembled from fragments")	\
	X(frag_expired,		"incomplete datagrams given up (timeout, no free slot)") \
	X(tcp_segments_in,	"TCP segments accepted into a flow or opening one") \
	X(drop_tcp_header,	"TCP header too short or bad data offset") \
	X(drop_tcp_options,	"TCP options overrun the header")	\
	X(drop_tcp_flags,	"TCP flag combination illegal")		\
	X(drop_tcp_port,	"TCP port zero")			\
	X(drop_tcp_csum,	"TCP checksum wrong, or partial checksum misplaced") \
	X(drop_tcp_no_flow,	"TCP segment for no connection (RST sent unless RST)") \
	X(drop_tcp_ack,		"TCP ACK for unsent data or before the SYN-ACK") \
	X(drop_tcp_rst,		"TCP RST not at rcv_nxt (challenge ACK in window)") \
	X(drop_tcp_syn,		"TCP SYN on a synchronised connection (challenge ACK)") \
	X(drop_tcp_window,	"TCP data beyond the window or after FIN (ACK sent)") \
	X(drop_tcp_ooo,		"TCP data ahead of rcv_nxt, not buffered (dup ACK sent)") \
	X(drop_tcp_old,		"TCP duplicate data or window probe (ACK sent)") \
	X(drop_tcp_paws,	"TCP timestamp older than the last one seen: PAWS (ACK sent)") \
	X(tcp_connects,		"TCP host connects started")		\
	X(tcp_connected,	"TCP host connects that succeeded")	\
	X(tcp_connect_refused,	"TCP host connects refused (RST to the namespace)") \
	X(tcp_connect_failed,	"TCP host connects failed otherwise")	\
	X(tcp_established,	"TCP handshakes completed with the namespace") \
	X(tcp_closed,		"TCP flows ended")			\
	X(tcp_bytes_up,		"TCP payload bytes namespace -> host")	\
	X(tcp_bytes_down,	"TCP payload bytes host -> namespace")	\
	X(tcp_retransmits,	"TCP frames sent again to the namespace") \
	X(tcp_fast_retransmits,	"TCP fast retransmits (third duplicate ACK)") \
	X(tcp_rto_expired,	"TCP retransmission timeouts")		\
	X(tcp_loss_probes,	"TCP tail loss probes sent")		\
	X(tcp_window_probes,	"TCP zero-window probes sent")		\
	X(tcp_window_updates,	"TCP window updates after the host socket drained") \
	X(tcp_window_clamps,	"TCP receive window clamps set on near host sockets (tcp_send.c)") \
	X(tcp_buffered,		"TCP namespace bytes held until the host socket took them") \
	X(tcp_ooo_held,		"TCP namespace bytes held after a gap until it was filled") \
	X(tcp_short_sends,	"TCP segments partly refused: host socket and buffer full") \
	X(tcp_rst_sent,		"TCP RSTs sent to the namespace")	\
	X(tcp_rst_received,	"TCP RSTs from the namespace accepted")	\
	X(tcp_host_resets,	"TCP host connections reset (SO_LINGER 0)") \
	X(tcp_host_errors,	"TCP host socket errors (RST to the namespace)") \
	X(tcp_challenge_acks,	"TCP challenge ACKs (RFC 5961)")	\
	X(tcp_icmp_sent,	"ICMP unreachable sent for failed TCP connects") \
	X(tcp_idle_timeouts,	"TCP flows reset after the idle timeout") \
	X(tcp_fin_timeouts,	"TCP flows reset after the FIN timeout") \
	X(tcp_ring_full,	"TCP control segments lost: namespace ring full") \
	X(fwd_accepted,		"connections accepted on forwarded host ports") \
	X(fwd_handoffs,		"forwarded connections handed to the worker owning them") \
	X(fwd_refused,		"forwarded connections reset: no flow could be opened") \
	/* fwdpath: the splice route for host-local clients (splice.c) */ \
	X(flows_open_splice,	"spliced connections held now (gauge)")	\
	X(splice_requests,	"sockets asked of the namespace child for host-local clients") \
	X(splice_opened,	"spliced connections established inside the namespace") \
	X(splice_refused,	"host-local clients reset: no connection inside (refused, timeout)") \
	X(splice_resets,	"spliced connections ended by an error or reset on one side") \
	X(splice_bad_replies,	"malformed or unexpected answers on the splice socket") \
	/* fwdpath: UDP forwards (udp_fwd.c) */				\
	X(fwd_udp_flows,	"UDP flows opened for senders to forwarded host ports") \
	X(fwd_udp_refused,	"datagrams to forwarded UDP ports dropped: no flow (cap, ports)") \
	X(fault_drop_in,	"frames from the namespace dropped by the fault injector") \
	X(fault_dup_in,		"frames from the namespace duplicated by the fault injector") \
	X(fault_hold_in,	"frames from the namespace reordered by the fault injector") \
	X(fault_drop_out,	"frames to the namespace dropped by the fault injector") \
	X(fault_dup_out,	"frames to the namespace duplicated by the fault injector") \
	X(fault_hold_out,	"frames to the namespace reordered by the fault injector") \
	/* egress rules (rules.c, names.c) */					\
	X(policy_rule,		"of policy_refused: an egress rule, or default_deny") \
	X(rules_default,	"new flows no egress rule matched (the default decided)") \
	X(names_learned,	"(name, address) pairs learnt from DNS answers") \
	X(names_evicted,	"learnt names evicted before expiry: table window full") \
	X(names_bad,		"DNS answers too malformed to learn names from") \
	/* network emulation (netem.c): up = namespace -> world */	\
	X(netem_queued_up,	"frames from the namespace in the emulation queue (gauge)") \
	X(netem_queued_down,	"frames to the namespace in the emulation queue (gauge)") \
	X(netem_loss_up,	"frames from the namespace lost by emulation (loss=)") \
	X(netem_loss_down,	"frames to the namespace lost by emulation (loss=)") \
	X(netem_dup_up,		"frames from the namespace duplicated by emulation (dup=)") \
	X(netem_dup_down,	"frames to the namespace duplicated by emulation (dup=)") \
	X(netem_reorder_up,	"frames from the namespace sent ahead of the emulation queue (reorder=)") \
	X(netem_reorder_down,	"frames to the namespace sent ahead of the emulation queue (reorder=)") \
	X(netem_full_up,	"frames from the namespace dropped: emulation queue full") \
	X(netem_full_down,	"frames to the namespace refused: emulation queue full (flows wait)") \
	X(netem_timers,		"emulation timer expiries") \
	/* on_connect hook (verdict.c) */					\
	X(hook_asks,		"new flows the on_connect hook was asked about") \
	X(hook_held,		"first frames of new flows held until the hook's verdict") \
	X(hook_absorbed,	"frames dropped while their flow waits for the hook (SYN retransmits, more datagrams)") \
	X(hook_denied,		"new flows refused by a cached hook verdict or the fail mode") \
	X(hook_cached,		"new flows decided from the worker's verdict cache") \
	X(hook_verdicts_deny,	"hook verdicts that denied a held flow (fail mode included)") \
	X(hook_verdicts_redirect, "hook verdicts that redirected a held flow") \
	X(hook_redirect_refused, "redirects refused: the policy refuses the target, or another family") \
	X(hook_timeouts,	"held flows given the fail mode: no verdict by the deadline") \
	X(hook_overflow,	"new flows given the fail mode: too many flows held") \
	X(hook_bad_verdicts,	"malformed verdicts from the orchestrator (dropped)") \
	/* packet capture and flow log (capture.c) */			\
	X(capture_frames,	"frames copied into the capture ring, both directions") \
	X(capture_bytes,	"packet bytes copied into the capture ring (snap length each at most)") \
	X(capture_drops,	"frames left out of the capture: capture ring full") \
	X(flowlog_events,	"flow open and close records put into the flow log ring") \
	X(flowlog_drops,	"flow open and close records lost: flow log ring full") \
	/* latency (issue 12): tcp_delack.c */				\
	X(tcp_acks_delayed,	"TCP ACKs of small namespace data held back to ride on the reply") \
	X(tcp_delack_timeouts,	"TCP delayed ACKs sent alone: no reply came within 2 ms") \
	X(tcp_connects_at_once,	"TCP host connects complete when connect() returned: SYN-ACK in the same pass")

/* Namespace pump counters, summed over its threads */
#define RN_PUMP_COUNTERS(X)						\
	X(tun_frames_in,	"frames read from the tun device")	\
	X(tun_bytes_in,		"bytes read from the tun device")	\
	X(tun_frames_out,	"frames written to the tun device")	\
	X(tun_bytes_out,	"bytes written to the tun device")	\
	X(tun_write_errors,	"frames the tun device refused")	\
	X(ring_full,		"times a worker ring was full")		\
	X(handoffs,		"frames queued to another queue's worker") \
	X(wakeups,		"times a pump thread woke from poll")	\
	X(kicks,		"doorbell writes towards workers")	\
	X(naps,			"naps instead of sleeps during small-packet streams") \
	X(polls,		"looks again instead of a sleep (busy polling)") \
	X(poll_hits,		"busy polls that ended with work found")

#define RN_CTR_ENUM_W(name, desc) RN_WCTR_##name,
#define RN_CTR_ENUM_P(name, desc) RN_PCTR_##name,
enum rn_worker_counter { RN_WORKER_COUNTERS(RN_CTR_ENUM_W) RN_WCTR_COUNT };
enum rn_pump_counter { RN_PUMP_COUNTERS(RN_CTR_ENUM_P) RN_PCTR_COUNT };

/* Space reserved per array, so that adding counters keeps the file layout */
#define RN_CTR_SLOTS		256u

_Static_assert(RN_WCTR_COUNT <= RN_CTR_SLOTS, "too many worker counters");
_Static_assert(RN_PCTR_COUNT <= RN_CTR_SLOTS, "too many pump counters");

/**
 * rn_ctr_add() - add to one counter; only the owning process calls this
 * @ctr:	the owner's counter array
 * @i:		counter index
 * @v:		amount
 */
static inline void rn_ctr_add(uint64_t *ctr, unsigned int i, uint64_t v)
{
	__atomic_store_n(&ctr[i], __atomic_load_n(&ctr[i], __ATOMIC_RELAXED) + v,
			 __ATOMIC_RELAXED);
}

unsigned int rn_worker_counter_count(void);
const char *rn_worker_counter_name(unsigned int i);
const char *rn_worker_counter_desc(unsigned int i);
unsigned int rn_pump_counter_count(void);
const char *rn_pump_counter_name(unsigned int i);
const char *rn_pump_counter_desc(unsigned int i);

#endif /* RN_COUNTERS_H */
