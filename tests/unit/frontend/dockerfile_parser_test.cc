#include "stagefarm/common/dockerfile_parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace stagefarm::frontend {
namespace {

using Strings = std::vector<std::string>;

TEST(DockerfileParser, DirectivesAreReadOnlyAtTheTop) {
  auto parsed = ParseDockerfile(
      "# syntax=docker/dockerfile:1\n# check=skip=all\n# escape=`\nFROM a\n# escape=\\\nRUN x `\n "
      "y\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_EQ(parsed->directives.size(), 3u);
  EXPECT_EQ(parsed->directives[0].value, "docker/dockerfile:1");
  EXPECT_EQ(parsed->directives[1].name, "check");
  EXPECT_EQ(parsed->directives[1].value, "skip=all");
  EXPECT_EQ(parsed->escape_token, '`');
  EXPECT_EQ(parsed->nodes[1].args, Strings{"x  y"});
}

TEST(DockerfileParser, BadOrRepeatedDirectiveIsAnError) {
  auto bad = ParseDockerfile("# escape=x\nFROM a\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "Dockerfile:1: # escape=x: invalid escape token 'x' does not match ` or \\");
  auto twice = ParseDockerfile("# syntax=a\n# syntax=b\nFROM a\n", "Containerfile");
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().message(),
            "Containerfile:2: # syntax=b: only one syntax parser directive can be used");
}

TEST(DockerfileParser, LinesCommentsAndContinuations) {
  auto parsed = ParseDockerfile(
      "from a\n"
      "\n"
      "# about run\n"
      "Run one \\\n"
      "# a comment inside\n"
      "\n"
      "  two \\\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_EQ(parsed->nodes.size(), 2u);
  const Node& run = parsed->nodes[1];
  EXPECT_EQ(run.keyword, "Run");
  EXPECT_EQ(run.command(), "run");
  EXPECT_EQ(run.args, Strings{"one   two"});
  EXPECT_EQ(run.start_line, 4);
  EXPECT_EQ(run.end_line, 7);
  EXPECT_EQ(run.comments, Strings{"about run"});
  EXPECT_EQ(parsed->warnings.size(), 1u);
}

TEST(DockerfileParser, FlagsAndExecForm) {
  auto parsed = ParseDockerfile(
      "FROM --platform=$BUILDPLATFORM a AS b\n"
      "COPY --from=b --chown=\"1:1\" [\"x y\", \"/z\"]\n"
      "RUN [\"a\", 1]\n");
  ASSERT_FALSE(parsed.ok());  // numbers in an exec form
  EXPECT_EQ(parsed.status().message(),
            "Dockerfile:3: RUN [\"a\", 1]: when using JSON array syntax, arrays must be "
            "comprised of strings only");
  parsed = ParseDockerfile(
      "FROM --platform=$BUILDPLATFORM a AS b\n"
      "COPY --from=b --chown=\"1:1\" [\"x y\", \"/z\"]\n");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->nodes[0].flags, Strings{"--platform=$BUILDPLATFORM"});
  EXPECT_EQ(parsed->nodes[0].args, (Strings{"a", "AS", "b"}));
  EXPECT_EQ(parsed->nodes[1].flags, (Strings{"--from=b", "--chown=1:1"}));
  EXPECT_TRUE(parsed->nodes[1].json);
  EXPECT_EQ(DumpNode(parsed->nodes[1]), "copy [\"--from=b\" \"--chown=1:1\"] \"x y\" \"/z\"");
}

TEST(DockerfileParser, ExecFormReadsAsNlohmannJsonDoes) {
  // Simple arrays are read without nlohmann::json; every case must agree with it, and anything
  // that is not a JSON array of strings stays shell form (or is the array-of-strings error).
  const std::vector<std::string> cases = {R"(["a"])",
                                          R"([])",
                                          R"([ ])",
                                          "[\t\"a\" ,\r \"b\"]\t",
                                          R"(["\"q\" \\ \/ \b\f\n\r\t"])",
                                          R"(["\u00e9\ud83d\ude00", "x"])",
                                          "[\"caf\xc3\xa9\"]",
                                          "[\"bad \xff\"]",
                                          R"(["a",])",
                                          R"(["a" "b"])",
                                          R"(["a"] x)",
                                          R"(["a)",
                                          R"(["\x"])",
                                          R"([,"a"])",
                                          "[\"tab\there\"]",
                                          R"(["a", ["b"]])",
                                          R"([1])",
                                          R"(["a", null])",
                                          R"(["a", {}])",
                                          "[\"\x7f\"]"};
  for (const std::string& json : cases) {
    SCOPED_TRACE(json);
    auto parsed = ParseDockerfile("FROM a\nCMD " + json + "\n");
    nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
    bool is_array = !j.is_discarded() && j.is_array();
    bool strings =
        is_array && std::all_of(j.begin(), j.end(), [](const auto& e) { return e.is_string(); });
    if (is_array && !strings) {
      ASSERT_FALSE(parsed.ok());
      EXPECT_NE(parsed.status().message().find("arrays must be comprised of strings only"),
                std::string::npos);
      continue;
    }
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    const Node& cmd = parsed->nodes[1];
    EXPECT_EQ(cmd.json, is_array);
    if (is_array) {
      EXPECT_EQ(cmd.args, j.get<Strings>());
    } else {
      EXPECT_EQ(cmd.args.size(), 1u);
    }
  }
}

TEST(DockerfileParser, HeredocsSeveralPerLineChompedAndQuoted) {
  auto parsed = ParseDockerfile(
      "FROM a\n"
      "COPY <<-A <<\"B\" /dst/\n"
      "\t\tindented $X\n"
      "\tA\n"
      "raw $X\n"
      "B\n"
      "RUN 3<<EOF cat\n"
      "x\n"
      "EOF\n"
      "ONBUILD RUN <<EOF\n"
      "later\n"
      "EOF\n"
      "RUN [\"<<NOT\"]\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  const Node& copy = parsed->nodes[1];
  ASSERT_EQ(copy.heredocs.size(), 2u);
  EXPECT_EQ(copy.heredocs[0].name, "A");
  EXPECT_TRUE(copy.heredocs[0].chomp);
  EXPECT_TRUE(copy.heredocs[0].expand);
  EXPECT_EQ(ChompHeredocContent(copy.heredocs[0].content), "indented $X\n");
  EXPECT_EQ(copy.heredocs[1].name, "B");
  EXPECT_FALSE(copy.heredocs[1].expand);
  EXPECT_EQ(copy.heredocs[1].content, "raw $X\n");
  EXPECT_EQ(copy.start_line, 2);
  EXPECT_EQ(copy.end_line, 6);
  EXPECT_EQ(parsed->nodes[2].heredocs.at(0).file_descriptor, 3u);
  EXPECT_EQ(parsed->nodes[3].heredocs.at(0).content, "later\n");
  EXPECT_EQ(DumpNode(parsed->nodes[3]), "onbuild (run \"<<EOF\")");
  EXPECT_TRUE(parsed->nodes[4].heredocs.empty());
  EXPECT_EQ(parsed->nodes[4].start_line, 13);
}

TEST(DockerfileParser, UnterminatedHeredocIsAnError) {
  auto parsed = ParseDockerfile("FROM a\nRUN <<EOF\necho\n");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().message(), "Dockerfile:2: RUN <<EOF: unterminated heredoc EOF");
}

TEST(DockerfileParser, EnvLegacyAndPairsLabelArgHealthcheck) {
  auto parsed = ParseDockerfile(
      "ENV A b c\n"
      "env X=1 Y=\"two words\"\n"
      "LABEL a=b\n"
      "ARG n v=\"1 2\"\n"
      "HEALTHCHECK NONE\n"
      "HEALTHCHECK --retries=2 CMD [\"true\"]\n");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->nodes[0].args, (Strings{"A", "b c", ""}));
  EXPECT_EQ(parsed->nodes[1].args, (Strings{"X", "1", "=", "Y", "\"two words\"", "="}));
  EXPECT_EQ(parsed->nodes[3].args, (Strings{"n", "v=\"1 2\""}));
  EXPECT_EQ(parsed->nodes[4].args, Strings{"NONE"});
  EXPECT_EQ(parsed->nodes[5].args, (Strings{"CMD", "true"}));
  EXPECT_TRUE(parsed->nodes[5].json);
  auto bad = ParseDockerfile("FROM a\nENV X=1 Y\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "Dockerfile:2: ENV X=1 Y: Syntax error - can't find = in \"Y\". Must be of the form: "
            "name=value");
}

TEST(DockerfileParser, EveryErrorNamesTheLineAndQuotesTheInstruction) {
  struct Case {
    std::string text, error;
  } cases[] = {
      {"FROM a\nENV A\n", "Dockerfile:2: ENV A: ENV must have two arguments"},
      {"FROM a\nlabel  only\n", "Dockerfile:2: LABEL  only: LABEL must have two arguments"},
      {"FROM a\nONBUILD ENV A\n", "Dockerfile:2: ONBUILD ENV A: ENV must have two arguments"},
      {"FROM a\nCMD [\"a\", \\\n  {\"b\": 1}]\n",
       "Dockerfile:2: CMD [\"a\",   {\"b\": 1}]: when using JSON array syntax, arrays must be "
       "comprised of strings only"},
      {"FROM a\nCOPY <<A <<B /dst\nx\nA\n",
       "Dockerfile:2: COPY <<A <<B /dst: unterminated heredoc B"},
      {"# escape=`\n# escape=\\\nFROM a\n",
       "Dockerfile:2: # escape=\\: only one escape parser directive can be used"},
      {"FROM a\nENV " + std::string(80, 'k') + "\n",
       "Dockerfile:2: ENV " + std::string(53, 'k') + "...: ENV must have two arguments"},
      {"\n# only a comment\n", "Dockerfile:2: file with no instructions"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseDockerfile(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().message(), c.error) << c.text;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace stagefarm::frontend
