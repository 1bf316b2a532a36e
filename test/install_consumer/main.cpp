// Uses the installed library the way an application would: one loop, one
// local-only Group (default Options: no Redis), one Do, then Close and run the
// loop until it has no handles left. Exits 0 only if the value arrived and
// the loop closed cleanly.
#include <singleflight/group.h>
#include <uv.h>

#include <cstdio>
#include <string>

namespace {

constexpr const char* kExpected = "hello from an installed singleflight";

}  // namespace

int main() {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) {
    std::fprintf(stderr, "uv_loop_init failed\n");
    return 1;
  }

  bool got_value = false;
  bool closed = false;
  {
    singleflight::Group group(&loop);
    singleflight::Call call = group.Do(
        "greeting",
        [](const singleflight::ProducerContext&, singleflight::Done done) { done(kExpected); },
        [&](const singleflight::Result& result) {
          if (result.ok()) {
            std::printf("value: %.*s (source: %.*s)\n", static_cast<int>(result.value().size()),
                        result.value().data(),
                        static_cast<int>(singleflight::SourceName(result.source).size()),
                        singleflight::SourceName(result.source).data());
            got_value = result.value() == kExpected;
          } else {
            std::fprintf(stderr, "Do failed: %s\n", result.status.ToString().c_str());
          }
          group.Close([&] { closed = true; });
        });
    if (!call.ok()) {
      std::fprintf(stderr, "Do refused: %s\n", call.status().ToString().c_str());
      group.Close([&] { closed = true; });
    }
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  // The group's memory is reclaimed from close callbacks: drain them.
  uv_run(&loop, UV_RUN_DEFAULT);

  if (uv_loop_close(&loop) != 0) {
    std::fprintf(stderr, "the loop still has open handles after Close\n");
    return 1;
  }
  if (!closed) {
    std::fprintf(stderr, "Close never called its callback\n");
    return 1;
  }
  return got_value ? 0 : 1;
}
