// Whether a group's handles keep their loop alive (Options::keep_loop_alive).
//
// Every handle the library creates goes through KeepsLoopAlive right after
// its uv_*_init: with keep_loop_alive false it is unref'd for its whole life,
// so uv_run never waits for it. Such a group relies on its embedder to keep
// the loop alive while calls are pending (the Node binding holds one ref'd
// handle while any call or producer of the group is outstanding). A handle
// being closed still delays uv_run until its close callback, ref'd or not.
#pragma once

#include <uv.h>

namespace singleflight::internal {

template <typename Handle>
void KeepsLoopAlive(Handle* handle, bool keep_loop_alive) {
  if (!keep_loop_alive) uv_unref(reinterpret_cast<uv_handle_t*>(handle));
}

}  // namespace singleflight::internal
