/* counters.c - counter names and descriptions for Python, from the lists in counters.h */
#include <stddef.h>

#include "counters.h"

#define RN_CTR_NAME(name, desc) #name,

static const char *const worker_names[] = { RN_WORKER_COUNTERS(RN_CTR_NAME) };
static const char *const pump_names[] = { RN_PUMP_COUNTERS(RN_CTR_NAME) };

#define RN_CTR_DESC(name, desc) desc,

static const char *const worker_descs[] = { RN_WORKER_COUNTERS(RN_CTR_DESC) };
static const char *const pump_descs[] = { RN_PUMP_COUNTERS(RN_CTR_DESC) };

/**
 * rn_worker_counter_count() - number of worker counters
 */
unsigned int rn_worker_counter_count(void)
{
	return RN_WCTR_COUNT;
}

/**
 * rn_worker_counter_name() - name of worker counter @i
 * @i:		index
 *
 * Return: the name, or NULL past the end
 */
const char *rn_worker_counter_name(unsigned int i)
{
	return i < RN_WCTR_COUNT ? worker_names[i] : NULL;
}

/**
 * rn_pump_counter_count() - number of pump counters
 */
unsigned int rn_pump_counter_count(void)
{
	return RN_PCTR_COUNT;
}

/**
 * rn_pump_counter_name() - name of pump counter @i
 * @i:		index
 *
 * Return: the name, or NULL past the end
 */
const char *rn_pump_counter_name(unsigned int i)
{
	return i < RN_PCTR_COUNT ? pump_names[i] : NULL;
}

/**
 * rn_worker_counter_desc() - one-line description of worker counter @i
 * @i:		index
 *
 * Return: the description, or NULL past the end
 */
const char *rn_worker_counter_desc(unsigned int i)
{
	return i < RN_WCTR_COUNT ? worker_descs[i] : NULL;
}

/**
 * rn_pump_counter_desc() - one-line description of pump counter @i
 * @i:		index
 *
 * Return: the description, or NULL past the end
 */
const char *rn_pump_counter_desc(unsigned int i)
{
	return i < RN_PCTR_COUNT ? pump_descs[i] : NULL;
}
