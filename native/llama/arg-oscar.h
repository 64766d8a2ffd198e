#pragma once
// oscar-gguf's options of llama.cpp's tools (common/arg.cpp calls this beside -ctk/-ctv): the f16 tier and the
// calibration of OScaR caches. Unset, each stays llama_context_default_params()'s (common_context_params_to_llama).

#include "arg.h"
#include "common.h"
#include "llama.h"

#include <stdexcept>
#include <string>

template <typename AddOpt>
static void llama_oscar_add_args(AddOpt && add_opt) {
    const llama_context_params def = llama_context_default_params();
    add_opt(common_arg(
        {"--oscar-sinks"}, "N",
        string_format("with an OScaR cache type (oscar2/3/4): keep the first N tokens of each sequence in an f16 tier "
                      "(default: %d)", def.oscar_sinks),
        [](common_params & params, int value) {
            if (value < 0) {
                throw std::invalid_argument("--oscar-sinks must be >= 0");
            }
            params.oscar_sinks = value;
        }
    ).set_env("LLAMA_ARG_OSCAR_SINKS"));
    add_opt(common_arg(
        {"--oscar-window"}, "N",
        string_format("with an OScaR cache type: keep the newest N tokens of each sequence in the f16 tier "
                      "(default: %d; 0 with --oscar-sinks 0: no tier)", def.oscar_window),
        [](common_params & params, int value) {
            if (value < 0) {
                throw std::invalid_argument("--oscar-window must be >= 0");
            }
            params.oscar_window = value;
        }
    ).set_env("LLAMA_ARG_OSCAR_WINDOW"));
    add_opt(common_arg(
        {"--oscar-calib"}, "on|off",
        string_format("with an OScaR cache type: apply the model's calibration (oscar.* metadata written by "
                      "'oscar-gguf calibrate') when it has one (default: %s)", def.oscar_calib ? "on" : "off"),
        [](common_params & params, const std::string & value) {
            if (value != "on" && value != "off") {
                throw std::invalid_argument("--oscar-calib must be on or off");
            }
            params.oscar_calib = value == "on";
        }
    ).set_env("LLAMA_ARG_OSCAR_CALIB"));
}
