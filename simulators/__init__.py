"""Local stand-ins of the third parties (WeChat Pay, Alipay, Aliyun Dysms, the insurance
bureau, the credit platform) for dev and tests. Each checks what the real side checks
(signatures, parameters) and keeps its own storage; the product never imports them: devstack
and the tests start them, and the product reaches them over HTTP like the real ones."""
