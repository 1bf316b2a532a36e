// Options::FromUrl: Redis URLs -> RedisOptions. A hand-written parser for the
// few shapes Redis clients agree on; anything else is refused with the reason
// rather than guessed at.
#include <cstdint>
#include <string>
#include <string_view>

#include "singleflight/options.h"

namespace singleflight {
namespace {

// The URL as an error message may show it: a password is replaced by "***"
// (error messages end up in logs).
std::string Redacted(std::string_view url) {
  std::string out(url);
  size_t start = out.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  size_t at = out.rfind('@');
  if (at == std::string::npos || at < start) return out;
  size_t colon = out.find(':', start);
  if (colon == std::string::npos || colon > at) return out;  // a user, no password
  return out.replace(colon + 1, at - colon - 1, "***");
}

Status Invalid(const std::string& why, std::string_view url) {
  return Status(Code::kInvalidArgument, "redis url: " + why + " in \"" + Redacted(url) + "\"");
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = HexDigit(in[i + 1]);
    int lo = HexDigit(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

// Digits only, within [min, max].
bool ParseNumber(std::string_view text, int64_t min, int64_t max, int* out) {
  if (text.empty() || text.size() > 10) return false;
  int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  if (value < min || value > max) return false;
  *out = static_cast<int>(value);
  return true;
}

// "host[:port]" or "[v6][:port]"; a missing port keeps `port`.
Status ParseHostPort(std::string_view text, std::string_view url, RedisOptions* r) {
  std::string_view host = text;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return Invalid("unclosed [ in the host", url);
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return Invalid("junk after the ]", url);
      port = rest.substr(1);
      if (port.empty()) return Invalid("empty port", url);
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon != std::string_view::npos) {
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
      if (port.empty()) return Invalid("empty port", url);
      if (host.find(':') != std::string_view::npos) {
        return Invalid("an IPv6 host needs brackets, [::1]:6379", url);
      }
    }
  }
  if (host.empty()) return Invalid("no host", url);
  r->host = std::string(host);
  if (!port.empty() && !ParseNumber(port, 1, 65535, &r->port)) {
    return Invalid("port \"" + std::string(port) + "\" is not 1-65535", url);
  }
  return Status::Ok();
}

// "[[user]:password@]" at the front of the authority: sets the credentials
// and returns the rest.
Status TakeCredentials(std::string_view* authority, std::string_view url, RedisOptions* r) {
  size_t at = authority->rfind('@');
  if (at == std::string_view::npos) return Status::Ok();
  std::string_view userinfo = authority->substr(0, at);
  *authority = authority->substr(at + 1);
  size_t colon = userinfo.find(':');
  std::string_view user = userinfo.substr(0, colon);
  if (!PercentDecode(user, &r->username)) return Invalid("bad %-escape in the user", url);
  if (colon == std::string_view::npos) {
    // "user@" alone: redis-py and ioredis read a lone name as the password
    // only with a colon before it; without one it is a user with no password.
    return Status::Ok();
  }
  if (!PercentDecode(userinfo.substr(colon + 1), &r->password)) {
    return Invalid("bad %-escape in the password", url);
  }
  return Status::Ok();
}

// "?db=N" and, for rediss://, the TLS files and names. Values are
// percent-decoded (a path may hold any byte).
Status ParseQuery(std::string_view query, std::string_view url, RedisOptions* r) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    std::string_view name = pair.substr(0, eq);
    std::string value;
    if (eq != std::string_view::npos && !PercentDecode(pair.substr(eq + 1), &value)) {
      return Invalid("bad %-escape in " + std::string(name), url);
    }
    bool is_tls = name.substr(0, 4) == "tls_";
    if (is_tls && !r->tls.enabled) {
      return Invalid(std::string(name) + " needs rediss:// (TLS)", url);
    }
    if (is_tls && name != "tls_verify" && value.empty()) {
      return Invalid(std::string(name) + " is empty", url);
    }
    if (name == "cluster") {
      if (value != "0" && value != "1") return Invalid("cluster is 0 or 1", url);
      r->cluster = value == "1";
    } else if (name == "db") {
      if (!ParseNumber(value, 0, INT32_MAX, &r->db)) return Invalid("db is not a number", url);
    } else if (name == "tls_ca") {
      r->tls.ca_file = value;
    } else if (name == "tls_ca_dir") {
      r->tls.ca_dir = value;
    } else if (name == "tls_cert") {
      r->tls.cert_file = value;
    } else if (name == "tls_key") {
      r->tls.key_file = value;
    } else if (name == "tls_server_name") {
      r->tls.server_name = value;
    } else if (name == "sentinel_password" && r->sentinel.enabled()) {
      r->sentinel.password = value;
    } else if (name == "sentinel_user" && r->sentinel.enabled()) {
      r->sentinel.username = value;
    } else if (name == "tls_verify") {
      if (value != "0" && value != "1") return Invalid("tls_verify is 0 or 1", url);
      r->tls.verify_peer = value == "1";
    } else {
      return Invalid("unknown parameter \"" + std::string(name) + "\"", url);
    }
  }
  if (r->cluster && (r->sentinel.enabled() || !r->unix_socket.empty())) {
    return Invalid("cluster=1 needs redis:// or rediss:// (a cluster node's host:port)", url);
  }
  if (r->cluster && r->db != 0) return Invalid("Redis Cluster has only db 0", url);
  if (r->tls.cert_file.empty() != r->tls.key_file.empty()) {
    return Invalid("tls_cert and tls_key go together", url);
  }
  return Status::Ok();
}

// Splits "...?query" into the part before the '?' (left in *rest) and the
// query, returned ("" when there is none).
std::string_view TakeQuery(std::string_view* rest) {
  size_t question = rest->find('?');
  if (question == std::string_view::npos) return {};
  std::string_view query = rest->substr(question + 1);
  *rest = rest->substr(0, question);
  return query;
}

Status ParseRedis(std::string_view rest, std::string_view url, RedisOptions* r) {
  std::string_view query = TakeQuery(&rest);
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path =
      slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  Status status = TakeCredentials(&authority, url, r);
  if (status.ok()) status = ParseHostPort(authority, url, r);
  if (status.ok() && !path.empty() && !ParseNumber(path, 0, INT32_MAX, &r->db)) {
    status = Invalid("db \"" + std::string(path) + "\" is not a number", url);
  }
  if (status.ok()) status = ParseQuery(query, url, r);
  return status;
}

// "[creds@]host[:port][,host[:port]...]/master_name[/db][?query]"; each
// sentinel's port defaults to 26379.
Status ParseSentinel(std::string_view rest, std::string_view url, RedisOptions* r) {
  std::string_view query = TakeQuery(&rest);
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return Invalid("no master name (.../master_name)", url);
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = rest.substr(slash + 1);
  Status status = TakeCredentials(&authority, url, r);
  if (!status.ok()) return status;
  while (status.ok()) {
    size_t comma = authority.find(',');
    RedisOptions one;
    one.port = 26379;
    status = ParseHostPort(authority.substr(0, comma), url, &one);
    if (status.ok()) r->sentinel.sentinels.push_back({one.host, one.port});
    if (comma == std::string_view::npos) break;
    authority = authority.substr(comma + 1);
  }
  if (!status.ok()) return status;
  size_t db_slash = path.find('/');
  std::string master;
  if (!PercentDecode(path.substr(0, db_slash), &master)) {
    return Invalid("bad %-escape in the master name", url);
  }
  if (master.empty()) return Invalid("no master name (.../master_name)", url);
  r->sentinel.master_name = master;
  if (db_slash != std::string_view::npos) {
    std::string_view db = path.substr(db_slash + 1);
    if (!ParseNumber(db, 0, INT32_MAX, &r->db)) {
      return Invalid("db \"" + std::string(db) + "\" is not a number", url);
    }
  }
  return ParseQuery(query, url, r);
}

Status ParseUnix(std::string_view rest, std::string_view url, RedisOptions* r) {
  std::string_view query = TakeQuery(&rest);
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return Invalid("no socket path", url);
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = rest.substr(slash);
  Status status = TakeCredentials(&authority, url, r);
  if (!status.ok()) return status;
  if (!authority.empty()) return Invalid("unix:// takes no host (unix:///path)", url);
  if (path.size() < 2) return Invalid("no socket path", url);
  if (!PercentDecode(path, &r->unix_socket)) return Invalid("bad %-escape in the path", url);
  return ParseQuery(query, url, r);
}

}  // namespace

Status Options::FromUrl(std::string_view url, Options* out) {
  RedisOptions r = out->redis;
  r.host.clear();
  r.port = 6379;
  r.unix_socket.clear();
  r.username.clear();
  r.password.clear();
  r.db = 0;
  r.tls = TlsOptions{};
  r.sentinel = SentinelOptions{};
  if (url.empty()) return Invalid("empty", url);
  size_t scheme_end = url.find("://");
  Status status;
  if (scheme_end == std::string_view::npos) {
    status = ParseHostPort(url, url, &r);  // host:port, the older convention
    if (status.ok() && url.find(':') == std::string_view::npos) {
      status = Invalid("no scheme and no port (redis://host or host:port)", url);
    }
  } else {
    std::string_view scheme = url.substr(0, scheme_end);
    std::string_view rest = url.substr(scheme_end + 3);
    if (scheme == "redis") {
      status = ParseRedis(rest, url, &r);
    } else if (scheme == "rediss") {
      r.tls.enabled = true;
      status = ParseRedis(rest, url, &r);
    } else if (scheme == "unix") {
      status = ParseUnix(rest, url, &r);
    } else if (scheme == "redis+sentinel" || scheme == "rediss+sentinel") {
      r.tls.enabled = scheme == "rediss+sentinel";
      status = ParseSentinel(rest, url, &r);
    } else {
      status = Invalid("unknown scheme \"" + std::string(scheme) + "\"", url);
    }
  }
  if (status.ok()) out->redis = std::move(r);
  return status;
}

}  // namespace singleflight
