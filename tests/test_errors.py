"""The one user-error type and its one-line message."""

from edgehal.errors import EdgehalError


def test_message_names_what_the_problem_and_what_was_expected():
    err = EdgehalError("config c.yaml: model.auxx", "is not an option of hal_resnet", "did you mean 'aux'?")
    assert str(err) == "config c.yaml: model.auxx | is not an option of hal_resnet. Note: did you mean 'aux'?"
    assert (err.what, err.problem, err.expected) == ("config c.yaml: model.auxx", "is not an option of hal_resnet",
                                                     "did you mean 'aux'?")


def test_without_an_expectation_there_is_no_note():
    assert str(EdgehalError("artifact m.onnx", "file not found")) == "artifact m.onnx | file not found"
