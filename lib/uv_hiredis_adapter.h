// The library's own libuv adapter for a hiredis 0.14 async context.
//
// hiredis's shipped adapters/libuv.h returns early on a poll error, so a
// refused connect or a reset socket is never reported to hiredis and its
// callbacks never run. This adapter hands every poll error to hiredis as a
// read event, so hiredis reads the socket, sees the error and tears the
// context down (running every pending callback with NULL).
//
// Lifetime: the adapter state is owned by the context. hiredis calls the
// cleanup hook while it frees the context; the adapter then closes its poll
// handle and frees itself in the close callback, after which it calls
// `on_closed` so that the owner knows nothing of this context is left on the
// loop.
#pragma once

#include <hiredis/async.h>
#include <uv.h>

namespace singleflight::internal {

using AdapterClosedFn = void (*)(void* arg);

// Attaches `ac` to `loop`. Call it right after redisAsyncConnect*, before
// setting the connect callback (which already asks for a write event).
// Returns REDIS_OK, or REDIS_ERR when the context already has an adapter or
// the poll handle cannot be created; then `on_closed` is never called and the
// caller still owns (and must free) the context.
// keep_loop_alive: Options::keep_loop_alive (lib/loop_ref.h).
int AttachUvAdapter(uv_loop_t* loop, redisAsyncContext* ac, AdapterClosedFn on_closed, void* arg,
                    bool keep_loop_alive);

}  // namespace singleflight::internal
