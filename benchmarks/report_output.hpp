// Rank 0 prints a benchmark's report: one JSON object, or the table and a
// closing OK line (the last line a script or a person reads).
#pragma once

#include <iostream>

namespace epx::bench {

template <class Report>
void print_report(int rank, bool json, const Report& r, const char* name) {
  if (rank != 0) return;
  if (json) {
    print_json(std::cout, r);
  } else {
    print_table(std::cout, r);
    std::cout << "epx-bench " << name << ": OK (results checked bit for bit, then timed)\n";
  }
  std::cout.flush();
}

}  // namespace epx::bench
