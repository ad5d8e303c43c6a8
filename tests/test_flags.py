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


def test_read_all_fails_on_any_bad_flag():
    with pytest.raises(flags.FlagError, match="FD_CUDAGRAPH_EXT_FORCE='2'"):
        flags.read_all({"FD_CUDAGRAPH_EXT": "1", "FD_CUDAGRAPH_EXT_FORCE": "2"})
