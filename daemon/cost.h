/* cost: prices one call's usage by its target's price row, estimates the usage of a call that
 * gave none (from the size of what was sent and relayed), and formats amounts. */
#ifndef LLMUX_COST_H
#define LLMUX_COST_H

#include <stddef.h>

#include "conf/conf.h"
#include "upstream/usage.h"

struct request;

/* Bytes of JSON per prompt token, for estimates: what tokenizers give on English text with
 * JSON framing around it; an estimate only has to be of the right size. */
#define COST_BYTES_PER_TOKEN 4

/* USD for u at price p: uncached prompt, cache reads, cache writes and completion tokens each
 * at their own rate, so no token is charged twice. */
double cost_of(const struct conf_price *p, const struct usage *u);
/* The usage charged for a call that reported none: the prompt from the bytes sent, and one
 * completion token per relayed stream event (OpenAI-style streams carry about one each). */
void cost_estimate(struct usage *u, size_t prompt_bytes, long completion_events);
/* Charges one attempt's usage u (none seen: the estimate from sent bytes and relayed events)
 * to r, priced by price (NULL: tokens only, the cost stays unknown). */
void cost_charge(struct request *r, const struct usage *u, const struct conf_price *price,
                 size_t sent_bytes, long events);
/* Streams carry their cost in a last SSE comment, ": cost_usd=N" (the head went out before it
 * was known; clients skip comments). Nothing without a price. */
void cost_stream_comment(struct request *r);
/* "0.0000125" (fixed point, no trailing zeros), or "-" when usd < 0 (no price). */
void cost_format(char *out, size_t n, double usd);

#endif
