# The addon compiles the library's own sources (../../lib/*.cpp) against the
# uv.h of the Node that builds it and links no libuv: every uv_* call binds to
# the libuv inside the node process (two libuvs in one process is the trap
# described in the project's STACK-FACTS). hiredis is linked statically and
# its symbols are kept out of the addon's exports (--exclude-libs).
{
  "targets": [
    {
      "target_name": "singleflight",
      "sources": [
        "src/addon.cc",
        "src/value_codec.cc",
        "<!@(node scripts/lib-sources.js)"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "../../include",
        "../../lib"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS",
        "MSGPACK_NO_BOOST",
        "NDEBUG"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++14"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-fvisibility=hidden", "-Wall", "-Wextra"],
      "libraries": [
        "<!(node scripts/hiredis-static.js)"
      ],
      "ldflags": ["-Wl,--exclude-libs,ALL", "-Wl,--version-script=<(module_root_dir)/src/exports.map"]
    }
  ]
}
