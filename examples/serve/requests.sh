# Requests to try against `make serve` (worker serve on 127.0.0.1:8080 with models/repository),
# from the repository's root, each followed by its answer. tests/serve_clients.rs runs every one and checks the answer.
# Inference needs an API key (make serve makes one in .serve/api-key and prints this line):
export SLUICE_API_KEY="$(cat .serve/api-key)"

# TensorFlow Serving REST: half_plus_two, y = x / 2 + 2
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" -X POST http://127.0.0.1:8080/v1/models/half_plus_two:predict -d '{"instances": [1.0, 2.0, 5.0]}'
# => {"predictions":[2.5,3.0,4.5]}

# TF Serving: iris version 1 (the logistic regression), two rows; then the model's status
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" -X POST http://127.0.0.1:8080/v1/models/iris/versions/1:predict -d '{"instances": [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1, 1.8]]}'
# => {"predictions":[{"label":0,"probabilities":[0.98165685,0.018343149,1.4395042e-8]},{"label":2,"probabilities":[0.0004705253,0.23526946,0.76426005]}]}
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" http://127.0.0.1:8080/v1/models/half_plus_two
# => {"model_version_status":[{"version":"1","state":"AVAILABLE","status":{"error_code":"OK","error_message":""}}]}

# KServe v2 (Open Inference Protocol, as Triton's clients speak it)
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" -X POST http://127.0.0.1:8080/v2/models/half_plus_two/infer -d '{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 5.0]}]}'
# => {"model_name":"half_plus_two","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[3],"data":[2.5,3.0,4.5]}]}
curl -s http://127.0.0.1:8080/v2/health/ready
# => {"ready":true}

# TorchServe: a health check, and rows of features as JSON or CSV, answered as the batch outputs name them
curl -s http://127.0.0.1:8080/ping
# => {"status":"Healthy"}
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" -X POST http://127.0.0.1:8080/predictions/iris/1 -H 'Content-Type: application/json' -d '{"id": 1, "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
# => {"id":1,"label":"setosa","probabilities_setosa":0.98165685,"probabilities_versicolor":0.018343149,"probabilities_virginica":1.4395042e-8}
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" -X POST http://127.0.0.1:8080/predictions/iris/1 -H 'Content-Type: text/csv' --data-binary $'id,sepal_length,sepal_width,petal_length,petal_width\n150,5.9,3.0,5.1,1.8\n'
# => id,label,probabilities_setosa,probabilities_versicolor,probabilities_virginica
# => 150,virginica,0.0004705253,0.23526946,0.76426005

# Images: the digits classifier (models/repository/digits), the image as multipart field "data" as
# TorchServe's clients send it (or as the body: --data-binary @file), the top 3 back
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" -X POST http://127.0.0.1:8080/predictions/digits -F "data=@examples/data/digits/0344-6.png"
# => [{"class":"6","probability":0.9999897},{"class":"0","probability":4.7235403e-6},{"class":"8","probability":3.983691e-6}]
# TF Serving carries images as base64: one prediction (the top 3) per instance
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" -X POST http://127.0.0.1:8080/v1/models/digits:predict -d "{\"instances\": [{\"b64\": \"$(base64 -w0 examples/data/digits/1496-7.png)\"}]}"
# => {"predictions":[[{"class":"7","probability":0.9718009},{"class":"9","probability":0.02771936},{"class":"4","probability":0.0003697439}]]}

# Without a key: 401, in the protocol's own error shape (x-api-key: KEY works as well as Bearer)
curl -s -X POST http://127.0.0.1:8080/v1/models/half_plus_two:predict -d '{"instances": [1.0]}'
# => {"error":"this request needs an API key, sent as Authorization: Bearer <key> or x-api-key: <key>"}
curl -s -H "x-api-key: $SLUICE_API_KEY" -X POST http://127.0.0.1:8080/v1/models/half_plus_two:predict -d '{"instances": [1.0]}'
# => {"predictions":[2.5]}

# Prometheus metrics: requests, errors, latency and batch sizes per model
curl -s -H "Authorization: Bearer $SLUICE_API_KEY" http://127.0.0.1:8080/metrics
