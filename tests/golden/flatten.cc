// golden-flatten IMAGE [--base BASE] [--replace FROM=TO]... [--compare EXPECTED]: prints the
// flattened listing of an image (a docker-archive tar, an OCI archive tar or an OCI layout
// directory) as JSON; with --base, only what differs from BASE, the form of
// tests/golden/fs-cases/*/expected.json. --replace rewrites text in the listing's strings (a
// git server's URL becomes ${GIT_HTTP}). With --compare, prints how the listing differs from
// EXPECTED instead and exits 1 if it does.
// scripts/regen-golden writes expected.json with it from BuildKit's OCI archives,
// scripts/golden-check compares stagefarm's images with it; golden_fs_test uses the same code.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>
#include <vector>
#include <string>

#include "golden/image_listing.h"

namespace {

// One file entry or one array element per line, so a golden file diffs well in review.
std::string Format(const nlohmann::json& listing) {
  std::string out = "{\n";
  bool first_key = true;
  for (auto it = listing.begin(); it != listing.end(); ++it) {
    out += first_key ? "" : ",\n";
    first_key = false;
    out += "  " + nlohmann::json(it.key()).dump() + ": ";
    if (it.value().is_array() && !it.value().empty()) {
      out += "[\n";
      for (size_t i = 0; i < it.value().size(); ++i) {
        out += "    " + it.value()[i].dump() + (i + 1 < it.value().size() ? ",\n" : "\n");
      }
      out += "  ]";
    } else {
      out += it.value().dump();
    }
  }
  return out + "\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string image, base, compare;
  std::vector<std::pair<std::string, std::string>> replacements;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--replace" && i + 1 < argc && std::strchr(argv[i + 1], '=') != nullptr) {
      std::string r = argv[++i];
      replacements.emplace_back(r.substr(0, r.find('=')), r.substr(r.find('=') + 1));
    } else if (arg == "--base" && i + 1 < argc) {
      base = argv[++i];
    } else if (arg == "--compare" && i + 1 < argc) {
      compare = argv[++i];
    } else if (image.empty() && !arg.starts_with("-")) {
      image = arg;
    } else {
      image.clear();
      break;
    }
  }
  if (image.empty()) {
    std::cerr << "usage: golden-flatten IMAGE [--base BASE_IMAGE] [--replace FROM=TO]... "
                 "[--compare EXPECTED_JSON]\n";
    return 2;
  }
  auto listing = stagefarm::golden::FlattenImage(image);
  if (!listing.ok()) {
    std::cerr << "golden-flatten: " << listing.status().ToString() << "\n";
    return 1;
  }
  nlohmann::json out = *listing;
  if (!base.empty()) {
    auto base_listing = stagefarm::golden::FlattenImage(base);
    if (!base_listing.ok()) {
      std::cerr << "golden-flatten: " << base_listing.status().ToString() << "\n";
      return 1;
    }
    out = stagefarm::golden::DiffFromBase(*base_listing, out);
  }
  for (const auto& [from, to] : replacements) stagefarm::golden::ReplaceText(out, from, to);
  if (!compare.empty()) {
    std::ifstream in(compare);
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json expected = nlohmann::json::parse(text.str(), nullptr, false);
    if (!in || !expected.is_object()) {
      std::cerr << "golden-flatten: " << compare << " is missing or not JSON\n";
      return 2;
    }
    // known-differences.txt beside the expected file: the case's deliberate deviations.
    const std::string dir = compare.find('/') == std::string::npos
                                ? "."
                                : compare.substr(0, compare.rfind('/'));
    auto known = stagefarm::golden::ReadKnownDifferences(dir + "/known-differences.txt");
    if (!known.ok()) {
      std::cerr << "golden-flatten: " << known.status().ToString() << "\n";
      return 2;
    }
    std::string differences = stagefarm::golden::SetAsideKnownDifferences(*known, expected, out);
    differences += stagefarm::golden::DescribeDifferences(expected, out);
    std::cout << differences;
    return differences.empty() ? 0 : 1;
  }
  std::cout << Format(out);
  return 0;
}
