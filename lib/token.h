// RandomToken: the 128-bit lock token that tells one leader's lease from any
// other's. It must be unpredictable and unique across the fleet: a collision
// would let one process renew or release another's lock.
#pragma once

#include <cstddef>
#include <string>

namespace singleflight::internal {

inline constexpr size_t kTokenBytes = 16;

// Returns kTokenBytes bytes from the kernel's CSPRNG (getrandom(2), then
// /dev/urandom). If neither works the process aborts with a message: a
// guessable token would silently break mutual exclusion, which is worse.
std::string RandomToken();

}  // namespace singleflight::internal
