#pragma once
// oscar-gguf's benchmark columns of llama-bench (tools/llama-bench/llama-bench.cpp calls these): the f16 tier and
// the calibration of OScaR caches, as lists like -ctk's, run as every combination.

#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

struct bench_oscar {
    int sinks, window, calib;
};

struct bench_oscar_lists {
    std::vector<int> sinks, window, calib;  // empty: llama_context_default_params()'s

    static bool is_arg(const std::string & arg) {
        return arg == "--oscar-sinks" || arg == "--oscar-window" || arg == "--oscar-calib";
    }

    // value: comma-separated non-negative integers (--oscar-calib: on/off or 1/0)
    bool parse(const std::string & arg, const std::string & value) {
        std::vector<int> & v = arg == "--oscar-sinks" ? sinks : arg == "--oscar-window" ? window : calib;
        size_t start = 0;
        while (start <= value.size()) {
            const size_t end = std::min(value.find(',', start), value.size());
            const std::string s = value.substr(start, end - start);
            if (arg == "--oscar-calib" && (s == "on" || s == "off")) {
                v.push_back(s == "on");
            } else {
                char * rest = nullptr;
                const long n = std::strtol(s.c_str(), &rest, 10);
                if (s.empty() || *rest || n < 0 || n > (1 << 24) || (arg == "--oscar-calib" && n > 1)) {
                    return false;
                }
                v.push_back((int) n);
            }
            start = end + 1;
        }
        return true;
    }

    std::vector<bench_oscar> product() const {
        const llama_context_params def = llama_context_default_params();
        const std::vector<int> s = sinks.empty() ? std::vector<int>{ def.oscar_sinks } : sinks;
        const std::vector<int> w = window.empty() ? std::vector<int>{ def.oscar_window } : window;
        const std::vector<int> c = calib.empty() ? std::vector<int>{ def.oscar_calib } : calib;
        std::vector<bench_oscar> out;
        for (int a : s) for (int b : w) for (int d : c) out.push_back({ a, b, d });
        return out;
    }

    bool shown() const { return !sinks.empty() || !window.empty() || !calib.empty(); }

    static void help() {
        const llama_context_params def = llama_context_default_params();
        printf("  --oscar-sinks <n>                                 (default: %d) OScaR caches: f16 tier sinks\n", def.oscar_sinks);
        printf("  --oscar-window <n>                                (default: %d) OScaR caches: f16 tier window\n", def.oscar_window);
        printf("  --oscar-calib <on|off>                            (default: %s) OScaR caches: the model's calibration\n",
               def.oscar_calib ? "on" : "off");
    }
};

static void bench_oscar_apply(const bench_oscar & o, llama_context_params & cparams) {
    cparams.oscar_sinks  = o.sinks;
    cparams.oscar_window = o.window;
    cparams.oscar_calib  = o.calib;
}

static std::vector<std::string> bench_oscar_values(const bench_oscar & o) {
    return { std::to_string(o.sinks), std::to_string(o.window), std::to_string(o.calib) };
}
