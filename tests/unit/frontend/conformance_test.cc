// Conformance with BuildKit's Dockerfile frontend, data-driven from BuildKit's test data kept in tests/conformance
// (conformance/dockerfile/{parser,parser-negative,expansion}).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "stagefarm/common/dockerfile_parser.h"
#include "stagefarm/common/shell_words.h"

namespace stagefarm::frontend {
namespace {

namespace fs = std::filesystem;

fs::path DataDir() { return fs::path(STAGEFARM_CONFORMANCE_DIR) / "dockerfile"; }

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<fs::path> CaseDirs(const fs::path& root) {
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root)) {
    if (e.is_directory()) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

std::string TrimSpaces(std::string s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

TEST(DockerfileParserConformance, EveryCaseMatchesBuildKitDump) {
  std::vector<fs::path> cases = CaseDirs(DataDir() / "parser");
  ASSERT_GT(cases.size(), 20u);
  for (const fs::path& dir : cases) {
    SCOPED_TRACE(dir.filename().string());
    StatusOr<ParsedDockerfile> parsed = ParseDockerfile(ReadFile(dir / "Dockerfile"));
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(DumpParseTree(*parsed), ReadFile(dir / "result"));
  }
}

TEST(DockerfileParserConformance, EveryNegativeCaseFails) {
  std::vector<fs::path> cases = CaseDirs(DataDir() / "parser-negative");
  ASSERT_GE(cases.size(), 4u);
  for (const fs::path& dir : cases) {
    SCOPED_TRACE(dir.filename().string());
    StatusOr<ParsedDockerfile> parsed = ParseDockerfile(ReadFile(dir / "Dockerfile"));
    ASSERT_FALSE(parsed.ok()) << DumpParseTree(*parsed);
    EXPECT_EQ(parsed.status().message().rfind("Dockerfile:", 0), 0u) << parsed.status().message();
  }
}

TEST(ShellWordsConformance, EnvVarTest) {
  const EnvLookup env = EnvFromList({"PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="});
  const ShellLex lex;
  std::istringstream in(ReadFile(DataDir() / "expansion" / "envVarTest"));
  std::string line;
  int line_no = 0, cases = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.rfind("#", 0) == 0) continue;
    line = TrimSpaces(line);
    if (line.empty()) continue;
    std::vector<std::string> fields = Split(line, '|');
    ASSERT_EQ(fields.size(), 3u) << "line " << line_no;
    std::string platform = TrimSpaces(fields[0]);
    if (platform != "A" && platform != "U") continue;
    std::string source = TrimSpaces(fields[1]);
    std::string expected = TrimSpaces(fields[2]);
    StatusOr<std::string> got = lex.ProcessWord(source, env);
    ++cases;
    if (expected == "error") {
      EXPECT_FALSE(got.ok()) << "line " << line_no << ": " << source << " gave " << *got;
    } else {
      ASSERT_TRUE(got.ok()) << "line " << line_no << ": " << got.status().ToString();
      EXPECT_EQ(*got, expected) << "line " << line_no << ": " << source;
    }
  }
  EXPECT_GT(cases, 100);
}

TEST(ShellWordsConformance, WordsTest) {
  std::vector<std::string> envs;
  const ShellLex lex;
  std::istringstream in(ReadFile(DataDir() / "expansion" / "wordsTest"));
  std::string line;
  int line_no = 0, cases = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.rfind("#", 0) == 0) continue;
    if (line.rfind("ENV ", 0) == 0) {
      std::string kv = line.substr(3);
      envs.push_back(kv.substr(kv.find_first_not_of(' ')));
      continue;
    }
    std::vector<std::string> fields = Split(line, '|');
    ASSERT_EQ(fields.size(), 2u) << "line " << line_no;
    std::string test = TrimSpaces(fields[0]);
    std::string expected_text =
        fields[1].substr(std::min(fields[1].find_first_not_of(' '), fields[1].size()));
    std::vector<std::string> expected = Split(expected_text, ',');
    StatusOr<std::vector<std::string>> got = lex.ProcessWords(test, EnvFromList(envs));
    std::vector<std::string> words = got.ok() ? *got : std::vector<std::string>{"error"};
    EXPECT_EQ(words, expected) << "line " << line_no << ": " << test;
    ++cases;
  }
  EXPECT_GT(cases, 20);
}

}  // namespace
}  // namespace stagefarm::frontend
