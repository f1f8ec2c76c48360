/* test_gate: the per-upstream admission of calls — HTTP/1.1 slots, the TLS handshake batches,
 * the FIFO of waiting calls, and HTTP/2 openers — as the engine drives it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "upstream/gate.h"

/* Admits a call as the engine does (started when admitted); returns whether it was. */
static bool start(struct gate *g, bool *opener)
{
    if (!gate_admit(g, opener))
        return false;
    gate_started(g, *opener);
    return true;
}

static void test_h1_plain_cap(void **state)
{
    struct gate *list = NULL;
    struct gate *g = gate_get(&list, "up", false, false, 3);
    struct gate_wait w[2];
    bool opener;
    assert_non_null(g);
    assert_ptr_equal(gate_get(&list, "up", false, true, 99), g);    /* found, not re-made */
    for (int i = 0; i < 3; i++) {
        assert_true(start(g, &opener));
        assert_false(opener);       /* plain HTTP: connects are cheap, never batched */
    }
    assert_false(gate_admit(g, &opener));
    gate_push(g, &w[0]);
    gate_push(g, &w[1]);
    assert_null(gate_pop(g, &opener));
    gate_ended(g, false);
    assert_ptr_equal(gate_pop(g, &opener), &w[0]);     /* first come, first served */
    gate_started(g, opener);
    assert_null(gate_pop(g, &opener));
    assert_true(gate_remove(g, &w[1]));
    assert_false(gate_remove(g, &w[1]));
    assert_int_equal(g->waiting, 0);
    gate_free_all(&list);
    assert_null(list);
}

/* Over TLS, calls with no idle connection to take open one each, GATE_HANDSHAKES at a time;
 * the rest wait until a handshake is done, and then reuse what is idle without waiting. */
static void test_h1_tls_handshakes(void **state)
{
    struct gate *list = NULL;
    struct gate *g = gate_get(&list, "up", false, true, 1000);
    struct gate_wait w;
    bool opener;
    for (unsigned i = 0; i < GATE_HANDSHAKES; i++) {
        assert_true(start(g, &opener));
        assert_true(opener);
        gate_h1_conn_opened(g, &opener);
        assert_true(opener);
    }
    assert_int_equal(g->openers, GATE_HANDSHAKES);
    assert_false(gate_admit(g, &opener));
    gate_push(g, &w);
    gate_ready(g);                  /* one handshake done: room for the next opener */
    assert_ptr_equal(gate_pop(g, &opener), &w);
    assert_true(opener);
    gate_started(g, opener);
    gate_ended(g, true);            /* an opener whose connect failed frees its handshake */
    assert_int_equal(g->openers, GATE_HANDSHAKES - 1);
    for (unsigned i = 1; i < GATE_HANDSHAKES; i++)
        gate_ready(g);
    gate_ended(g, false);           /* a call done: its connection is idle */
    assert_true(start(g, &opener));
    assert_false(opener);           /* it will reuse that one */
    gate_h1_conn_opened(g, &opener);
    assert_true(opener);            /* … but curl opened one anyway: its handshake counts */
    assert_int_equal(g->openers, 1);
    gate_free_all(&list);
}

/* HTTP/2: one opener per GATE_STREAMS waiting calls, the rest wait for its connection. */
static void test_h2_openers(void **state)
{
    struct gate *list = NULL;
    struct gate *g = gate_get(&list, "up", true, true, 10);
    struct gate_wait w[3];
    bool opener;
    assert_false(g->tls);       /* the handshake batches are HTTP/1.1's */
    assert_true(gate_counts_conns(g));
    assert_true(start(g, &opener));
    assert_true(opener);
    gate_conn_opened(g, true);
    for (int i = 0; i < 3; i++) {
        assert_false(gate_admit(g, &opener));
        gate_push(g, &w[i]);
    }
    assert_null(gate_pop(g, &opener));
    gate_ready(g);
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(gate_pop(g, &opener), &w[i]);
        assert_false(opener);
        gate_started(g, opener);
    }
    assert_int_equal(g->active, 4);
    gate_free_all(&list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h1_plain_cap),
        cmocka_unit_test(test_h1_tls_handshakes),
        cmocka_unit_test(test_h2_openers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
