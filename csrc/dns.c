/* dns.c - the DNS forwarder's upstream resolvers, replaceable while running
 *
 * The DNS addresses of the namespace (dns4, dns6) forward port 53 to the
 * upstream resolvers in w->p.dns: the orchestrator reads them from the host's
 * resolv.conf at start and again whenever it changes, or takes them from
 * --dns-upstream. The translation itself happens where flows are created
 * (policy.c); this file only keeps the list valid. Flows already open keep the
 * upstream they were created with.
 */
#include <errno.h>
#include <string.h>

#include "dns.h"

/**
 * rn_dns_set_upstreams() - replace the upstream resolvers
 * @w:		worker
 * @ups:	new resolvers, in order of preference
 * @n:		entries in @ups, 0..RN_DNS_UPSTREAM_MAX (0: DNS queries fail)
 *
 * Return: 0, or -EINVAL if @n is too large or an entry has a bad family or
 *	   port 0 (then nothing changes)
 */
int rn_dns_set_upstreams(struct rn_worker *w, const struct rn_dns_upstream *ups, uint32_t n)
{
	uint32_t i;

	if (n > RN_DNS_UPSTREAM_MAX || (n && !ups))
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if ((ups[i].family != 4 && ups[i].family != 6) || !ups[i].port)
			return -EINVAL;
	}
	memset(w->p.dns, 0, sizeof(w->p.dns));
	if (n)
		memcpy(w->p.dns, ups, n * sizeof(*ups));
	w->p.ndns = n;
	return 0;
}
