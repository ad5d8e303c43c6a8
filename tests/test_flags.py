import pytest

from fastdeploy_cudagraph_ext import flags


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " on "])
def test_true_values(value):
    assert flags.read_bool("FD_CUDAGRAPH_EXT", {"FD_CUDAGRAPH_EXT": value}) is True


@pytest.mark.parametrize("value", ["0", "false", "No", "OFF", ""])
def test_false_values(value):
    assert flags.read_bool("FD_CUDAGRAPH_EXT", {"FD_CUDAGRAPH_EXT": value}) is False


def test_unset_is_false():
    assert flags.read_bool("FD_CUDAGRAPH_EXT", {}) is False


def test_bad_value_names_variable_value_and_accepted_values():
    with pytest.raises(flags.FlagError) as error:
        flags.read_bool("FD_CUDAGRAPH_EXT", {"FD_CUDAGRAPH_EXT": "enable"})
    message = str(error.value)
    assert message.startswith("FD_CUDAGRAPH_EXT='enable' is not a valid value.")
    assert "1/true/yes/on to enable" in message and "0/false/no/off or unset to disable" in message


def test_read_settings_fails_on_any_bad_flag():
    with pytest.raises(flags.FlagError, match="FD_CUDAGRAPH_EXT_ROUND_SIZES='2'"):
        flags.read_settings({"FD_CUDAGRAPH_EXT": "1", "FD_CUDAGRAPH_EXT_ROUND_SIZES": "2"})


def test_read_settings_parses_every_flag_once():
    settings = flags.read_settings({"FD_CUDAGRAPH_EXT": "1", "FD_CUDAGRAPH_EXT_CLEAN_EVERY_DECODE": "yes"})
    assert settings == flags.Settings(enable=True, clean_every_decode=True)


def test_retired_flags_are_errors_that_say_what_to_do():
    with pytest.raises(flags.FlagError, match="FD_CUDAGRAPH_EXT_FORCE is no longer supported.*Unset"):
        flags.read_settings({"FD_CUDAGRAPH_EXT_FORCE": "1"})
    # A decode batch over DeepEP's cap asserts with or without a graph: dropping graphs never made it safe.
    with pytest.raises(flags.FlagError) as error:
        flags.read_settings({"FD_CUDAGRAPH_EXT_DROP_OVERSIZE": "1"})
    assert str(error.value) == ("FD_CUDAGRAPH_EXT_DROP_OVERSIZE is no longer supported: " +
                                flags.RETIRED["FD_CUDAGRAPH_EXT_DROP_OVERSIZE"] + ".")
    assert "lower --max-num-seqs or raise the cap" in str(error.value)
