/* Waiting for QEMU events: a step that needs one (an export deleted, a
 * job concluded) registers a waiter before it sends the command that
 * causes it, so the event cannot slip past.  A waiter fires once: with
 * the event's data, or with NULL after its timeout or when QEMU goes
 * away; or it is cancelled, silently, when its command failed. */
#include "agent/agent.h"

struct event_waiter {
    struct agent *agent;
    char *event;
    json_t *match;
    ev_timer timer;
    vm_event_cb *cb;
    void *opaque;
    struct event_waiter *next;
};

static void
waiter_unlink(struct agent *a, struct event_waiter *w)
{
    for (struct event_waiter **p = &a->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    ev_timer_stop(a->loop, &w->timer);
}

static void
waiter_free(struct event_waiter *w)
{
    json_decref(w->match);
    free(w->event);
    free(w);
}

static void
waiter_fire(struct event_waiter *w, json_t *data)
{
    struct agent *a = w->agent;
    waiter_unlink(a, w);
    w->cb(a, data, w->opaque);
    waiter_free(w);
}

static void
waiter_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    waiter_fire(t->data, NULL);
}

struct event_waiter *
vm_wait_event(struct agent *a, const char *event, json_t *match,
              double timeout, vm_event_cb *cb, void *opaque)
{
    struct event_waiter *w = xcalloc(1, sizeof *w);
    *w = (struct event_waiter) {
        .agent = a, .event = xstrdup(event), .match = match ? match : json_object(),
        .cb = cb, .opaque = opaque, .next = a->waiters,
    };
    ev_timer_init(&w->timer, waiter_timeout, timeout, 0.);
    w->timer.data = w;
    ev_timer_start(a->loop, &w->timer);
    a->waiters = w;
    return w;
}

void
vm_cancel_wait(struct agent *a, struct event_waiter *w)
{
    waiter_unlink(a, w);
    waiter_free(w);
}

static bool
data_matches(json_t *match, json_t *data)
{
    const char *key;
    json_t *v;
    json_object_foreach(match, key, v)
        if (!json_equal(v, json_object_get(data, key)))
            return false;
    return true;
}

void
vm_fire_waiters(struct agent *a, const char *event, json_t *data)
{
    struct event_waiter *w = a->waiters;
    while (w) {
        struct event_waiter *next = w->next;
        if (!event || (strcmp(w->event, event) == 0 && data_matches(w->match, data))) {
            waiter_fire(w, event ? data : NULL);
            next = a->waiters;  /* the list may have changed under us */
        }
        w = next;
    }
}
