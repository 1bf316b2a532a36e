#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "demo.h"

namespace sfdemo {
namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: sf_demo --redis HOST:PORT | --redis-url URL (else $SINGLEFLIGHT_REDIS)\n"
               "               [--workers N=4] [--callers C=25] [--keys K=3]\n"
               "               [--work-ms W=200] [--result-ttl-ms 1000] [--lock-ttl-ms 1000]\n"
               "               [--prefix P=sfdemo:<pid>:]\n");
}

// A positive integer, or false.
bool ParsePositive(const std::string& text, long max, long* out) {
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value <= 0 || value > max) return false;
  *out = value;
  return true;
}

}  // namespace

bool ParseArgs(int argc, char** argv, Config* config) {
  std::string error;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--worker") {
      config->worker = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "sf_demo: %s needs a value\n", flag.c_str());
      return false;
    }
    std::string value = argv[++i];
    long n = 0;
    bool ok = true;
    if (flag == "--redis" || flag == "--redis-url") {
      if (!examples::ParseRedisTarget(value, &config->redis, &error)) {
        std::fprintf(stderr, "sf_demo: %s\n", error.c_str());
        return false;
      }
    } else if (flag == "--prefix") {
      config->prefix = value;
    } else if (flag == "--workers" && (ok = ParsePositive(value, 64, &n))) {
      config->workers = static_cast<int>(n);
    } else if (flag == "--callers" && (ok = ParsePositive(value, 100000, &n))) {
      config->callers = static_cast<int>(n);
    } else if (flag == "--keys" && (ok = ParsePositive(value, 1000, &n))) {
      config->keys = static_cast<int>(n);
    } else if (flag == "--work-ms" && (ok = ParsePositive(value, 60000, &n))) {
      config->work_ms = static_cast<uint32_t>(n);
    } else if (flag == "--result-ttl-ms" && (ok = ParsePositive(value, 600000, &n))) {
      config->result_ttl_ms = static_cast<uint32_t>(n);
    } else if (flag == "--lock-ttl-ms" && (ok = ParsePositive(value, 600000, &n))) {
      config->lock_ttl_ms = static_cast<uint32_t>(n);
    } else if (flag == "--burst" && (ok = ParsePositive(value, 1000, &n))) {
      config->burst = static_cast<int>(n);
    } else if (flag == "--index" && (ok = ParsePositive(value, 1000, &n))) {
      config->index = static_cast<int>(n) - 1;
    } else if (ok) {
      std::fprintf(stderr, "sf_demo: unknown flag %s\n", flag.c_str());
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "sf_demo: bad value for %s: %s\n", flag.c_str(), value.c_str());
      return false;
    }
  }
  if (!examples::RedisTargetFromEnv(&config->redis, &error)) {
    std::fprintf(stderr, "sf_demo: %s\n", error.c_str());
    return false;
  }
  if (!config->redis.enabled()) {
    std::fprintf(stderr,
                 "sf_demo: --redis HOST:PORT, --redis-url URL or SINGLEFLIGHT_REDIS is required\n");
    return false;
  }
  if (config->prefix.empty()) config->prefix = "sfdemo:" + std::to_string(getpid()) + ":";
  return true;
}

std::string ExecutionCounter(const Config& config, int burst, const std::string& key) {
  return config.prefix + "exec:" + std::to_string(burst) + ":" + key;
}

std::string KeyName(int index) {
  return "key-" + std::to_string(index);
}

}  // namespace sfdemo

int main(int argc, char** argv) {
  sfdemo::Config config;
  if (!sfdemo::ParseArgs(argc, argv, &config)) {
    sfdemo::Usage();
    return 2;
  }
  return config.worker ? sfdemo::RunWorker(config) : sfdemo::RunParent(config);
}
