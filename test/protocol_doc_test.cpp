// docs/protocol.md is the contract a second implementation is written from:
// the script bodies it shows must be the ones the library runs.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "lua_scripts.h"

namespace singleflight::internal {
namespace {

std::string ReadDoc() {
  std::ifstream in(SF_PROTOCOL_DOC);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Trimmed(std::string_view body) {
  while (!body.empty() && body.front() == '\n') body.remove_prefix(1);
  while (!body.empty() && body.back() == '\n') body.remove_suffix(1);
  return std::string(body);
}

TEST(ProtocolDoc, ShowsEveryScriptBodyAsShipped) {
  const std::string doc = ReadDoc();
  ASSERT_FALSE(doc.empty()) << "cannot read " << SF_PROTOCOL_DOC;
  for (size_t i = 0; i < kScriptCount; ++i) {
    auto id = static_cast<ScriptId>(i);
    EXPECT_NE(doc.find("```lua\n" + Trimmed(ScriptSource(id)) + "\n```"), std::string::npos)
        << ScriptName(id) << " differs from docs/protocol.md";
    EXPECT_NE(doc.find("```lua\n" + Trimmed(ShardedScriptSource(id)) + "\n```"), std::string::npos)
        << ScriptName(id) << " (cluster variant) differs from docs/protocol.md";
  }
}

}  // namespace
}  // namespace singleflight::internal
