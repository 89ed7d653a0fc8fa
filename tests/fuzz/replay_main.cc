// A stand-in for libFuzzer's main, for builds without libFuzzer (gcc, the normal CI build): runs
// LLVMFuzzerTestOneInput on every seed file, then on a fixed number of deterministic mutations of
// them (byte flips, inserts, deletes, duplicated ranges, splices, tokens that matter to
// Dockerfiles), so CI exercises each target in bounded time. A crash or a sanitizer report fails
// the test and leaves the failing input in ./replay-crash-<target>.
//
//   replay_main [--mutations=N] [--seed=S] [--max-len=N] PATH...   (PATH: a file or directory)
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Present when a sanitizer runtime is linked (STAGEFARM_SANITIZE builds).
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace {

namespace fs = std::filesystem;

std::string g_target = "fuzz";

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The input running now, written to ./replay-crash-<target> if it crashes (signal handler or
// sanitizer death callback: only async-signal-safe calls).
const std::string* g_current = nullptr;
char g_crash_path[512];

extern "C" void WriteCrashInput() {
  if (g_current == nullptr) return;
  int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t off = 0;
  while (off < g_current->size()) {
    ssize_t n = ::write(fd, g_current->data() + off, g_current->size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  ::close(fd);
  static const char kMsg[] = "replay: the crashing input is in ./replay-crash-*\n";
  (void)!::write(2, kMsg, sizeof kMsg - 1);
}

extern "C" void OnCrashSignal(int sig) {
  WriteCrashInput();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void Run(const std::string& input) {
  g_current = &input;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  g_current = nullptr;
}

// Tokens that reach deep into the Dockerfile parser, the expander and the ignore matcher.
const char* const kTokens[] = {
    "\n",     "\\\n",   "`\n",        "$",       "${",      "}",       "${A:-",    "${A:+x}",
    "${A?",   "$A",     "'",          "\"",      "\\",      "<<EOF\n", "\nEOF\n",  "<<-\"E\"",
    "[\"",    "\"]",    "--from=",    "--mount=type=cache,target=/x,", "FROM a AS b\n",
    "COPY ",  "RUN ",   "ONBUILD ",   "ARG ",    "ENV ",    "=",       "# escape=`\n",
    "# syntax=x\n",     "*",          "**",      "**/",     "?",       "[",       "]",
    "[^a-z]", "!",      "/",          "../",     "./",      "\0",      "\xC3\xA9", "\xFF",
    "HEALTHCHECK --interval=1s CMD ", "EXPOSE 1-3/udp ",  "--platform=$BUILDPLATFORM ",
};

std::string Mutate(const std::vector<std::string>& corpus, std::mt19937_64& rng, size_t max_len) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  std::string s = corpus.empty() ? std::string() : corpus[pick(corpus.size())];
  int rounds = 1 + static_cast<int>(pick(8));
  for (int r = 0; r < rounds; ++r) {
    switch (pick(7)) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << pick(8));
        break;
      case 1:  // insert a random byte
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(pick(s.size() + 1)),
                 static_cast<char>(rng() & 0xFF));
        break;
      case 2:  // delete a range
        if (!s.empty()) {
          size_t at = pick(s.size());
          s.erase(at, 1 + pick(std::min<size_t>(16, s.size() - at)));
        }
        break;
      case 3: {  // duplicate a range
        if (s.empty()) break;
        size_t at = pick(s.size());
        std::string piece = s.substr(at, 1 + pick(32));
        s.insert(pick(s.size() + 1), piece);
        break;
      }
      case 4: {  // splice with another input
        if (corpus.empty()) break;
        const std::string& other = corpus[pick(corpus.size())];
        s = s.substr(0, pick(s.size() + 1)) + other.substr(pick(other.size() + 1));
        break;
      }
      default: {  // insert a token
        const char* t = kTokens[pick(sizeof kTokens / sizeof kTokens[0])];
        s.insert(pick(s.size() + 1), std::string(t, std::strlen(t) == 0 ? 1 : std::strlen(t)));
        break;
      }
    }
  }
  if (s.size() > max_len) s.resize(max_len);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 2000;
  uint64_t seed = 1;
  size_t max_len = 8192;
  std::vector<std::string> corpus;
  g_target = fs::path(argv[0]).filename().string();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--mutations=", 0) == 0) {
      mutations = std::strtol(a.c_str() + 12, nullptr, 10);
    } else if (a.rfind("--seed=", 0) == 0) {
      seed = std::strtoull(a.c_str() + 7, nullptr, 10);
    } else if (a.rfind("--max-len=", 0) == 0) {
      max_len = std::strtoull(a.c_str() + 10, nullptr, 10);
    } else if (fs::is_directory(a)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::recursive_directory_iterator(a)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());  // the same order, so the same mutations, every run
      for (const fs::path& f : files) corpus.push_back(ReadFile(f));
    } else if (fs::is_regular_file(a)) {
      corpus.push_back(ReadFile(a));
    } else {
      std::fprintf(stderr, "%s: no such seed file or directory: %s\n", argv[0], a.c_str());
      return 2;
    }
  }
  std::snprintf(g_crash_path, sizeof g_crash_path, "replay-crash-%s", g_target.c_str());
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, OnCrashSignal);
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(WriteCrashInput);
  auto start = std::chrono::steady_clock::now();
  Run(std::string());
  for (const std::string& input : corpus) Run(input);
  std::mt19937_64 rng(seed);
  for (long i = 0; i < mutations; ++i) Run(Mutate(corpus, rng, max_len));
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %zu seeds and %ld mutations ran without a crash in %.2f s\n", g_target.c_str(),
              corpus.size(), mutations, secs);
  return 0;
}
