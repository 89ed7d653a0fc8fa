#include "stagefarm/cli/app.h"

int main(int argc, char** argv) { return stagefarm::cli::Main(argc, argv); }
