#include "common/spawn.h"

namespace examples {

int SpawnPiped(uv_loop_t* loop, uv_process_t* process, const std::string& exe,
               std::vector<std::string> args, uv_pipe_t* in, uv_pipe_t* out, uv_exit_cb on_exit) {
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  if (in != nullptr) {
    stdio[0].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_READABLE_PIPE);
    stdio[0].data.stream = reinterpret_cast<uv_stream_t*>(in);
  }
  stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[1].data.stream = reinterpret_cast<uv_stream_t*>(out);
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t options{};
  options.file = exe.c_str();
  options.args = argv.data();
  options.exit_cb = on_exit;
  options.stdio_count = 3;
  options.stdio = stdio;
  return uv_spawn(loop, process, &options);
}

}  // namespace examples
