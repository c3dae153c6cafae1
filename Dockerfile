# Verdict as a container image: build with the workspace's toolchain, run on a slim Debian.
#   docker build -t verdict .
#   docker run -p 8080:8080 -e VERDICT_SERVER__HOST=0.0.0.0 verdict
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p verdict

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/verdict --create-home verdict
COPY --from=build /src/target/release/verdict /usr/local/bin/verdict
USER verdict
WORKDIR /var/lib/verdict
ENV VERDICT_DATA_DIR=/var/lib/verdict \
    VERDICT_SERVER__HOST=0.0.0.0
EXPOSE 8080
ENTRYPOINT ["verdict"]
CMD ["serve"]
