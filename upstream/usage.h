/* usage: the token counts of one answer by kind, as providers report them, in the shape every
 * codec fills and the cost accounting prices. */
#ifndef LLMUX_USAGE_H
#define LLMUX_USAGE_H

#include <stdbool.h>

struct usage {
    long prompt;            /* every prompt token, cached ones included (OpenAI's prompt_tokens) */
    long completion;
    long cache_read;        /* of prompt: served from the provider's prompt cache */
    long cache_write;       /* of prompt: written to it (Anthropic's cache_creation) */
    bool seen;              /* the answer carried usage */
};

#endif
