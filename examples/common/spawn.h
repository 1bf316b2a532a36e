// SpawnPiped: start a child process on the loop with its stdin and/or stdout
// connected to pipes the parent reads and writes (the demo's and the fetch
// service's workers). stderr is inherited, so a worker's errors reach the
// terminal directly.
#pragma once

#include <uv.h>

#include <string>
#include <vector>

namespace examples {

// `args` starts with argv[0]. `in` (the child's stdin) may be null: the
// child's stdin is then ignored. Both pipes must be uv_pipe_init'ed already.
// Returns uv_spawn's result; on failure the caller still closes `process`
// and the pipes (libuv initialised them either way).
int SpawnPiped(uv_loop_t* loop, uv_process_t* process, const std::string& exe,
               std::vector<std::string> args, uv_pipe_t* in, uv_pipe_t* out, uv_exit_cb on_exit);

}  // namespace examples
